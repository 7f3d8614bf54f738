"""`python -m hone`: the same as the `hone` command (what `accelerate launch -m hone` runs)."""

from hone.cli import main

if __name__ == "__main__":
    main()
