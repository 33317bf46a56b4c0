"""`python -m monosemantic VERB CONFIG`: the entry `torchrun ... -m monosemantic` launches on every rank."""

from monosemantic.cli import main

if __name__ == "__main__":
    main()
