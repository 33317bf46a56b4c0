"""Released dictionaries by name: Gemma Scope 2, Llama Scope, Qwen Scope, circuit-tracer's
transcoder sets and CLTs, transcoder_circuits' GPT-2 transcoders, and SAELens' directory.

One module per release family reads that release's files exactly as its own published loader
does (each module's docstring names the code it follows), converting to our `Dictionary`
classes; `resolve.py` turns a config line into local files (`catalog.py` names, hub folders,
SAELens ids), `read.py` picks the reader, `family.py` keeps a release off a model of another
family. `docs/releases.md` has the table of releases with the test that reads each.
"""

from .build import ReleaseRef
from .family import check_family, family_of_model, manifest_family
from .read import entries, is_release, read_release
from .resolve import Located, is_remote, locate, split_layer
from .saelens_directory import directory_file, resolve_release

__all__ = ["Located", "ReleaseRef", "check_family", "directory_file", "entries", "family_of_model",
           "is_release", "is_remote", "locate", "manifest_family", "read_release", "resolve_release", "split_layer"]  # fmt: skip
