"""The production tree: ``<prod_cert_dir>/<group>/<svc>/{curr,next}/`` as real directories.

It mirrors what the servers should use, in upstream's layout, with two differences:
the private keys of local CAs never leave ``certs/`` (upstream copied the root's key to every
server), and a file is rewritten only when its bytes differ, so an unchanged tree causes no
churn and the sync doubles as the integrity check upstream ran on every start.

Each file is replaced atomically; ``bundle.pem`` holds key and chain in one file, which is why
servers that can read it (postfix) never see a key that does not match its certificate.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from sslm_tasks.config.models import CA_GROUP
from sslm_tasks.lifecycle.workspace import Workspace
from sslm_tasks.store import layout as files
from sslm_tasks.store.atomic import ensure_dir, write_files_atomic
from sslm_tasks.store.layout import ProdLinkName, ServiceRef
from sslm_tasks.store.versions import is_complete, read_link

#: Files that carry a private key; never copied for the ``ca`` group.
_SECRET_FILES = frozenset({files.PRIVKEY, files.BUNDLE})
#: What a production version holds (upstream's file set).
_SHIPPED_FILES = frozenset({*files.COMPLETE_FILES, files.TLSA_RR, files.INFO})
#: Mode of the production directories: deploy tooling in the group may read them.
PROD_DIR_MODE = 0o750


def _wanted_files(ref: ServiceRef, source: Path) -> dict[str, Path]:
    """The version's known files; anything else (a temp file left by a crash) stays behind."""
    names = _SHIPPED_FILES - _SECRET_FILES if ref.group == CA_GROUP else _SHIPPED_FILES
    return {name: source / name for name in sorted(names) if (source / name).is_file()}


def _mirror(source: Path, dest: Path, wanted: dict[str, Path]) -> bool:
    """Make ``dest`` hold exactly ``wanted``; True when anything changed."""
    changed = not dest.is_dir()
    ensure_dir(dest, mode=PROD_DIR_MODE)
    writes: dict[Path, tuple[bytes, int]] = {}
    for name, path in wanted.items():
        data = path.read_bytes()
        target = dest / name
        if target.is_file() and target.read_bytes() == data:
            continue
        writes[target] = (data, files.KEY_MODE if name in _SECRET_FILES else files.PUBLIC_MODE)
    if writes:
        # One batch: every file is on disk before the first rename, and one directory sync.
        write_files_atomic(writes)
        changed = True
    for stale in dest.iterdir():
        if stale.name not in wanted:
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale)
            else:
                stale.unlink()
            changed = True
    return changed


def sync_service(ws: Workspace, ref: ServiceRef) -> bool:
    """Copy ``curr`` and ``next`` of one service to production; True when anything changed.

    A link that is absent (no ``next`` after a roll) removes its production copy.
    """
    layout = ws.layout
    changed = False
    which: ProdLinkName
    for which in ("curr", "next"):
        dest = layout.prod_version_dir(ref, which)
        stamp = read_link(layout, ref, which)
        if stamp is None or not is_complete(layout, ref, stamp):
            if dest.exists():
                shutil.rmtree(dest)
                changed = True
            continue
        source = layout.version_dir(ref, stamp)
        ensure_dir(layout.prod_dir, mode=PROD_DIR_MODE)
        ensure_dir(layout.prod_group_dir(ref.group), mode=PROD_DIR_MODE)
        ensure_dir(dest.parent, mode=PROD_DIR_MODE)
        changed |= _mirror(source, dest, _wanted_files(ref, source))
    return changed
