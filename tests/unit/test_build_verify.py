"""The last check before ``next``: a local CA's leaf is judged against the CA's certificate, and
the CA's own path once per run for all its leaves; whatever is wrong on either part is found."""

from __future__ import annotations

import shutil
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from support import REPO

from sslm_tasks.config.load import load_config
from sslm_tasks.crypto.csr import load_csr
from sslm_tasks.crypto.keys import KeySpec, generate_private_key
from sslm_tasks.crypto.signing import SigningPolicy, sign_with_ca
from sslm_tasks.errors import PermanentError
from sslm_tasks.lifecycle import build, roll
from sslm_tasks.lifecycle.context import ServiceContext
from sslm_tasks.lifecycle.workspace import Workspace
from sslm_tasks.store.layout import ServiceRef

ROOT, INT = ServiceRef("ca", "my-root"), ServiceRef("ca", "my-int")
LEAVES = [ServiceRef("example.com", "mail-ec"), ServiceRef("example.com", "web-ec")]


def build_to_next(ctx: ServiceContext) -> str:
    """A fresh build of the service up to its signed certificate; its stamp."""
    stamp = build.start_build(ctx)
    build.make_key(ctx)
    build.make_csr(ctx)
    build.sign(ctx)
    return stamp


def ca_stamp(ctx: ServiceContext) -> str:
    signing = build.signing_ca_curr(ctx)
    assert signing is not None
    return signing[1]


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    """The example tree with its CAs issued and rolled, in a workspace of its own (a run)."""
    shutil.copytree(REPO / "conf.d", tmp_path / "conf.d")
    config, _ = load_config([], conf_dir=tmp_path / "conf.d")
    for ca in (ROOT, INT):
        ctx = ServiceContext(Workspace(config=config), ca)
        build_to_next(ctx)
        build.store(ctx)
        roll.flip(ctx)
    return Workspace(config=config)


@pytest.fixture
def judged(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The length of the chain of every path judged from now on."""
    lengths: list[int] = []
    real = build.verify_chain

    def counting(cert, chain, **kwargs):  # type: ignore[no-untyped-def]
        lengths.append(len(chain))
        return real(cert, chain, **kwargs)

    monkeypatch.setattr(build, "verify_chain", counting)
    return lengths


def test_the_cas_path_is_judged_once_for_all_its_leaves(ws: Workspace, judged: list[int]) -> None:
    # When two leaves of my-int are stored in one run
    for ref in LEAVES:
        ctx = ServiceContext(ws, ref)
        build_to_next(ctx)
        build.store(ctx)
    # Then my-int's path (it and my-root) was judged once, and each leaf against my-int alone
    assert sorted(judged) == [1, 1, 2], judged


def test_a_leaf_the_ca_did_not_sign_is_refused(ws: Workspace) -> None:
    # Given a build whose certificate names my-int as issuer but was signed by another key
    ctx = ServiceContext(ws, LEAVES[0])
    stamp = build_to_next(ctx)
    version = ws.layout.version_dir(ctx.ref, stamp)
    material = build.signer_material(ctx.of(INT), ca_stamp(ctx))
    impostor_key = generate_private_key(KeySpec(ktype="ec", ec_curve="secp384r1"))
    impostor = (
        x509.CertificateBuilder()
        .subject_name(material.cert.subject)
        .issuer_name(material.cert.subject)
        .public_key(impostor_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(ctx.now() - timedelta(days=1))
        .not_valid_after(ctx.now() + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(impostor_key, hashes.SHA384())
    )
    csr = load_csr((version / "csr.pem").read_bytes())
    forged = sign_with_ca(csr, impostor_key, impostor, SigningPolicy(days=30), now=ctx.now())
    assert forged.issuer == material.cert.subject
    (version / "cert.pem").write_bytes(forged.public_bytes(Encoding.PEM))
    # When it is stored, Then the check against my-int's certificate refuses it
    with pytest.raises(PermanentError, match="does not verify"):
        build.store(ctx)


def test_what_is_wrong_with_the_cas_path_refuses_every_leaf(ws: Workspace) -> None:
    # Given the run's verdict on my-int's path names a problem
    ctx = ServiceContext(ws, LEAVES[0])
    build_to_next(ctx)
    key = (INT, ca_stamp(ctx))
    ws.signers[key] = replace(ws.signers[key], problems=("my-root expired",))
    # When a leaf is stored, Then it is refused, naming the CA and the problem
    with pytest.raises(PermanentError, match="its signing CA ca:my-int: my-root expired"):
        build.store(ctx)


def test_a_leaf_below_name_constraints_has_its_whole_path_judged(
    ws: Workspace, judged: list[int]
) -> None:
    # Given my-int's path has name constraints (they bind every leaf's names)
    ctx = ServiceContext(ws, LEAVES[0])
    build_to_next(ctx)
    key = (INT, ca_stamp(ctx))
    ws.signers[key] = replace(ws.signers[key], constrained=True)
    judged.clear()
    # When the leaf is stored, Then its path is judged whole, through my-int to my-root
    build.store(ctx)
    assert judged == [2]
