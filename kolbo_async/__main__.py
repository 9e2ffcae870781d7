"""`python -m kolbo_async`: the `kolbo` command."""

from ._cli import run

if __name__ == "__main__":
    run()
