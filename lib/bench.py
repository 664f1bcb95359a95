"""``python -m lib.bench``: see :mod:`lib.tools.bench`."""

from .tools.bench import main

if __name__ == "__main__":
    main()
