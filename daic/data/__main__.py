"""``python -m daic.data``: the same commands as ``daic data``."""
from daic.commands.data import command

if __name__ == "__main__":
    command(prog_name="python -m daic.data")
