"""``python -m facemetric``: the command line, so that ``torchrun --nproc-per-node N -m facemetric
train --config RECIPE`` launches one trainer per process (torchrun runs modules with ``-m``)."""

from facemetric.cli.main import main

if __name__ == "__main__":
    main()
