"""``hafvt provenance check``: are the committed results made by the current sources?"""
from __future__ import annotations

from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("provenance", help="check that committed results were made by the current sources")
    verbs = p.add_subparsers(dest="verb", required=True)
    c = verbs.add_parser("check", help="exit 1 naming every stale results file and the sources changed since")
    c.add_argument("paths", nargs="*", type=Path,
                   help="results files or folders (default: results/, book/_static/results/, book/notebooks/)")
    c.set_defaults(func=_check)
    z = verbs.add_parser("certify", help="probe stale results under their recorded and the current sources; "
                                         "certify those that compute the same (results/certificates/)")
    z.add_argument("paths", nargs="*", type=Path, help="results files or folders (default: as for check)")
    z.set_defaults(func=_certify)


def _check(args) -> int:
    from hafvt.provenance import cmd_check

    return cmd_check(args)


def _certify(args) -> int:
    from hafvt.certify import cmd_certify

    return cmd_certify(args)
