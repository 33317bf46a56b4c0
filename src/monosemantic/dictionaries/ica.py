"""ICA baseline: d_sae/2 independent components of the activations (scikit-learn's FastICA,
unit-variance whitening), as in Cunningham et al. 2023. Encoder rows are the unmixing matrix,
decoder rows the mixing matrix's columns; see `fitted.py` for the +/- latent pairs."""

from __future__ import annotations

import torch
from torch import Tensor

from .base import register_dictionary
from .fitted import FittedConfig, FittedDictionary


@register_dictionary("ica", FittedConfig)
class ICADictionary(FittedDictionary):
    def directions(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        import warnings

        from sklearn.decomposition import FastICA
        from sklearn.exceptions import ConvergenceWarning

        seed = int(torch.randint(0, 2**31 - 1, ()).item())  # drawn from torch's seeded generator
        ica = FastICA(n_components=self.n_directions, whiten="unit-variance", max_iter=400, random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            ica.fit(x.numpy())
        E = torch.from_numpy(ica.components_).double()  # [n, d] unmixing
        D = torch.from_numpy(ica.mixing_.T.copy()).double()  # [n, d] mixing columns
        return E, D
