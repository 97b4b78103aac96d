"""`voicefleet operator [kopf run flags]`: kopf's own `run` command with our handlers.

Every `kopf run` flag passes through unchanged (`--namespace/-n`, `--all-namespaces/-A`,
`--standalone`, `--verbose`, `--liveness`, `--peering`, ...); the handlers module is
preloaded so nobody has to know its path. Operator settings come from VOICEFLEET_* env vars.
"""

from __future__ import annotations

from collections.abc import Sequence

import click
import kopf.cli

HANDLERS_MODULE = "voicefleet_operator.handlers"


def operator_main(argv: Sequence[str]) -> int:
    args = ["--module", HANDLERS_MODULE, *argv]
    try:
        kopf.cli.run.main(args=args, prog_name="voicefleet operator", standalone_mode=False)
    except click.exceptions.Exit as exc:  # --help
        return int(exc.exit_code)
    except click.ClickException as exc:  # bad flags
        exc.show()
        return int(exc.exit_code)
    except (KeyboardInterrupt, click.exceptions.Abort):
        return 130
    return 0
