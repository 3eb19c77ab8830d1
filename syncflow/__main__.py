"""``python -m syncflow``: the ``syncflow`` command line."""

from syncflow.cli import main

if __name__ == "__main__":
    main()
