"""A tenant's applied directory as the ZIP an SFTP destination takes (docs/outlets.md).

What is pushed is the directory as the store holds it *when the attempt is made*
(active people only, with their managed account names), not the upload the run
read: a retry that comes after a later run pushes that later, newer state, so a
destination never receives an older directory than one it already has.

- ``asm``: the six Apple School Manager CSVs (``pipeline/asm_writer.py``, the layout
  ``rosterdrop`` itself reads). ASM's people files have no column for the managed
  account, and ASM makes its Managed Apple Accounts from a format over the record's
  fields (the same fields ``account_format`` offers), so ``sis_username`` carries
  the local part of each person's managed account name (before the ``@``): an ASM
  format of "SIS username" @ the tenant's ``account_domain`` then gives every
  person exactly the name rosterdrop chose. ``email_address`` is left as the SIS
  sent it (federated sign-in matches on it).
- ``oneroster-1.1`` / ``oneroster-1.2``: a OneRoster CSV bundle (``manifest.csv`` and
  the six files, 1.2 with ``roles.csv``) written by the pull's ``BundleWriter`` from
  the records the OneRoster API serves (``oneroster/records.py``): the managed
  account name is each user's ``username``.

Every frame is put in key order first, so one directory state always gives the same
bytes (the push compares sizes to find a file an interrupted attempt already placed).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from rosterdrop.config import DestinationFormat, Settings
from rosterdrop.errors import DeliveryError, RosterdropError
from rosterdrop.outlets.oneroster import records
from rosterdrop.paths import StatePaths, private_file, private_folder
from rosterdrop.pipeline.asm_writer import write_asm_zip
from rosterdrop.pipeline.model import Model, conform
from rosterdrop.pipeline.snapshot import ACTIVE, Snapshot
from rosterdrop.sources.oneroster.bundle import BundleWriter
from rosterdrop.store.directory import load_snapshot
from rosterdrop.store.engine import Store, translate

EXPORTS_FOLDER = "outlets"
"""Under the state folder: one private folder per attempt, removed when it ends."""


@dataclass(frozen=True, slots=True)
class Export:
    """One attempt's ZIP on the local disk."""

    path: Path
    size: int
    format: DestinationFormat


def asm_model(snapshot: Snapshot) -> Model:
    """The applied directory as a model ``write_asm_zip`` writes: active people only,
    ``sis_username`` their managed account's local part, and only the instructors and
    roster entries of people who are in the files (ASM refuses a dangling reference)."""
    snapshot = snapshot.sorted()
    people = snapshot.people.filter(pl.col("status") == ACTIVE).with_columns(
        pl.coalesce(pl.col("account").str.split("@").list.first(),
                    pl.col("sis_username")).alias("sis_username"),
        pl.lit(True).alias("active"),
    )
    staff = people.filter(pl.col("role") == "staff")["person_id"]
    students = people.filter(pl.col("role") == "student")["person_id"]

    def live(frame: pl.DataFrame) -> pl.DataFrame:
        return frame.with_columns(pl.lit(True).alias("active"))

    return Model(
        locations=conform("locations", live(snapshot.locations)),
        people=conform("people", people),
        courses=conform("courses", live(snapshot.courses)),
        classes=conform("classes", live(snapshot.classes)),
        instructors=conform("instructors", live(
            snapshot.instructors.filter(pl.col("person_id").is_in(staff.implode())))),
        rosters=conform("rosters", live(
            snapshot.rosters.filter(pl.col("student_id").is_in(students.implode())))),
    )


def write_export(store: Store, tenant_key: str, fmt: DestinationFormat,
                 folder: Path) -> Export:
    """Write the tenant's applied directory as ``fmt`` into ``folder`` (blocking: run
    it in a thread)."""
    path = folder / "export.zip"
    if fmt == "asm":
        write_asm_zip(asm_model(load_snapshot(store, tenant_key)), path)
    else:
        _write_oneroster(store, tenant_key, fmt, folder, path)
    private_file(path)
    return Export(path, path.stat().st_size, fmt)


def _write_oneroster(store: Store, tenant_key: str, fmt: DestinationFormat, folder: Path,
                     path: Path) -> None:
    """The OneRoster CSV bundle of the directory, from the records the OneRoster API
    serves (``oneroster/records.py``), read in one transaction (one consistent state).
    Deactivated people and their enrollments (``tobedeleted`` there) are left out: a
    bulk file lists what is, as the ASM export does."""
    version = fmt.removeprefix("oneroster-")
    writer = BundleWriter(folder / "parts", version)
    try:
        with translate(f"reading the directory of tenant {tenant_key!r}"), \
                store.read() as conn:
            ctx = records.context(conn, tenant_key, version)
            for collection in records.COLLECTIONS:
                writer.add(collection, (
                    record for batch in records.iter_records(conn, ctx, collection)
                    for record in batch if record.get("status") != "tobedeleted"))
        writer.write_zip(path, system_name="rosterdrop", system_code=tenant_key)
    finally:
        writer.remove_parts()


@contextlib.asynccontextmanager
async def exported(settings: Settings, store: Store, tenant_key: str,
                   fmt: DestinationFormat) -> AsyncIterator[Export]:
    """The ZIP of one attempt, built in a thread in a private folder under the state
    folder; the folder is removed when the attempt ends (also when it is cancelled:
    then once the thread, which cannot be stopped, has finished with it)."""
    try:
        parent = private_folder(StatePaths.of(settings).root / EXPORTS_FOLDER)
        folder = Path(tempfile.mkdtemp(prefix=f"{tenant_key}-", dir=parent))  # 0700
    except OSError as exc:
        raise DeliveryError(f"cannot write the export under {settings.state_dir}: "
                            f"{exc.strerror or exc}") from exc
    build = asyncio.ensure_future(asyncio.to_thread(write_export, store, tenant_key, fmt,
                                                    folder))
    try:
        try:
            export = await asyncio.shield(build)
        except OSError as exc:
            raise DeliveryError(f"cannot write the export under {settings.state_dir}: "
                                f"{exc.strerror or exc}") from exc
        except DeliveryError:
            raise
        except RosterdropError as exc:  # the store could not be read
            raise DeliveryError(f"cannot read the directory of tenant {tenant_key!r}: "
                                f"{exc}") from exc
        yield export
    finally:
        if build.done():
            _remove(folder, build)
        else:
            build.add_done_callback(functools.partial(_remove, folder))


def _remove(folder: Path, build: asyncio.Future[Export]) -> None:
    if not build.cancelled():
        build.exception()  # retrieved: an attempt cancelled meanwhile has no one to tell
    shutil.rmtree(folder, ignore_errors=True)
