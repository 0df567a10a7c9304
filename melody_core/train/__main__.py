"""`python -m melody_core.train STAGE ...` = `melody train STAGE ...` (handy under torchrun)."""

from melody_core.runtime import prepare_environment

prepare_environment()  # before torch is imported

import sys  # noqa: E402

from melody_core.commands.train import main  # noqa: E402

sys.exit(main())
