"""``python -m custom_nets <command>``: see ``custom_nets.cli``."""

from custom_nets.cli import main

if __name__ == "__main__":
    main()
