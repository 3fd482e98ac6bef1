"""Plan a sync: the diff of the filtered, patched model against the snapshot.

``plan_sync`` is pure: same snapshot, model, settings and ``today`` → same
plan. The :class:`Plan` holds frames of exactly the rows to write, so the
store's ``apply_plan`` touches nothing else, and :func:`advance` computes the
snapshot that applying it yields (used for the snapshot cache and for the
"planning again changes nothing" property).

People (keyed by ``account_id``):

- **created**: person_id unknown to the store and not matched by duplicate
  prevention; gets a managed account name (``accounts.py``);
- **updated**: a synced field (``PERSON_FIELDS``) changed, the SIS id changed
  (duplicate prevention), or the account was inactive and is back
  (**reactivated**, same account; counted as updated in ``changes()``);
- **deactivated**: active, absent from a bulk upload, or named by a delta
  tombstone (``active == False``); the row and its account name stay until
  retention purges them;
- a locally edited account (``source = "local"``) keeps its values; one
  ``ACCOUNT_LOCAL`` warning per such person lists the SIS values not applied.
  It is no longer the SIS's to end: absent from a bulk upload or tombstoned, it
  stays active and one ``ACCOUNT_LOCAL`` warning says so (``people reset`` hands
  it back). Reactivation and a new SIS id still follow the SIS.
- an imported account (``source = "imported"``, ``people import``) was never the
  SIS's: absent from a bulk upload it stays active, silently. An incoming person
  who takes it over (duplicate prevention) makes it ``source = "sis"`` with the SIS
  values; its placeholder person_id (``imported:<account>``) is not kept in
  ``previous_ids``, since it was never an SIS id.

Locations, courses, classes, instructors and rosters: created, updated (a
value changed), removed (absent from a bulk upload, or tombstoned in a delta)
or unchanged. Instructors are part of their class: a class whose instructor
list changed counts as an updated class.

Delta kinds (``model.delta``) change only what they name; absent records are
untouched. A delta tombstone of a class or person also removes the stored
rosters and instructor rows that name it (and any upsert of such rows in the
same upload), so no row points at a removed class or inactive person.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import polars as pl

from rosterdrop.codes import Code
from rosterdrop.config import AccountRole, TenantSettings
from rosterdrop.pipeline.accounts import NameRule, assign_accounts
from rosterdrop.pipeline.imports import PLACEHOLDER_PREFIX
from rosterdrop.pipeline.issues import IssueLog
from rosterdrop.pipeline.match import MATCHED_SCHEMA, match_duplicates
from rosterdrop.pipeline.messages import person_issues, quoted
from rosterdrop.pipeline.model import Model
from rosterdrop.pipeline.snapshot import (
    ACTIVE,
    IMPORTED,
    INACTIVE,
    KEYS,
    LOCAL,
    PEOPLE_SCHEMA,
    PERSON_FIELDS,
    SIS,
    SNAPSHOT_SCHEMAS,
    Snapshot,
    snapshot_frame,
)

ROLE_KINDS = {"student": "students", "staff": "staff"}
CHANGE_KINDS = ("locations", "students", "staff", "courses", "classes", "rosters")
"""The kinds ``Plan.changes()`` reports: the ``counts`` kinds of cli.md, people split by role."""
REMOVABLE_KINDS = ("locations", "courses", "classes", "rosters")
TABLE_VALUES: dict[str, tuple[str, ...]] = {
    kind: tuple(name for name in SNAPSHOT_SCHEMAS[kind] if name not in KEYS[kind])
    for kind in ("locations", "courses", "classes", "instructors", "rosters")
}


@dataclass(frozen=True)
class TableChanges:
    """The rows to write for one table (snapshot schema)."""

    create: pl.DataFrame
    """New rows, complete."""
    update: pl.DataFrame
    """Changed rows, complete, with their new values."""
    remove: pl.DataFrame
    """Key columns of the rows to delete."""
    unchanged: int = 0

    @classmethod
    def nothing(cls, kind: str) -> TableChanges:
        empty = snapshot_frame(kind)
        return cls(empty, empty, empty.select(KEYS[kind]))

    def rows(self) -> int:
        return self.create.height + self.update.height + self.remove.height


@dataclass(frozen=True)
class PeopleChanges:
    """The people rows to write (``PEOPLE_SCHEMA``)."""

    create: pl.DataFrame
    """New people: ``account_id`` is null (the store assigns it), status active, source sis."""
    update: pl.DataFrame
    """Existing accounts with new values, reactivations included."""
    deactivate: pl.DataFrame
    """Accounts to deactivate, as they will be (status inactive, deactivated_on today)."""
    reactivated: int = 0
    unchanged: dict[str, int] = field(default_factory=dict)
    """Per change kind (students/staff)."""
    noted: pl.Series = field(default_factory=lambda: pl.Series("account_id", [], pl.Int64))
    """Accounts in ``update`` written only to note a local account's new SIS values
    (``sis_seen``): unchanged as far as the admin can tell."""
    matched: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=MATCHED_SCHEMA))
    """Duplicate prevention's matches (``match.MATCHED_SCHEMA``): the ``matches.csv`` rows."""

    def rows(self) -> int:
        return self.create.height + self.update.height + self.deactivate.height


@dataclass(frozen=True)
class Plan:
    """What a sync changes, as frames of exactly the rows to write."""

    base: Snapshot
    """The snapshot the plan was made against (``apply_plan`` checks its revision)."""
    today: date
    people: PeopleChanges
    locations: TableChanges
    courses: TableChanges
    classes: TableChanges
    instructors: TableChanges
    rosters: TableChanges
    failed: bool = False
    """Planning found errors (``MATCH_AMBIGUOUS``, ``ACCOUNT_NAME_FAILED``): never apply it."""
    classes_touched: int = 0
    """Classes not otherwise changed whose instructor list changed (counted as updated)."""

    def table(self, kind: str) -> TableChanges:
        return getattr(self, kind)  # type: ignore[no-any-return]

    def rows(self) -> int:
        """How many rows applying the plan writes."""
        return self.people.rows() + sum(
            self.table(kind).rows()
            for kind in ("locations", "courses", "classes", "instructors", "rosters")
        )

    def is_empty(self) -> bool:
        return self.rows() == 0

    @property
    def deactivated_people(self) -> int:
        return self.people.deactivate.height

    @property
    def removed_classes(self) -> int:
        return self.classes.remove.height

    def changes(self) -> dict[str, dict[str, int]]:
        """The ``changes`` object of ``sync --json`` (cli.md).

        ``created``, ``updated`` and ``unchanged`` have every kind of
        :data:`CHANGE_KINDS`; ``deactivated`` has students and staff (people
        are deactivated, never removed); ``removed`` has the other kinds.
        Reactivated people count as updated; a class counts as updated when
        its instructors changed.
        """
        people = self.people

        def by_role(frame: pl.DataFrame) -> dict[str, int]:
            counts = dict.fromkeys(ROLE_KINDS.values(), 0)
            for role, n in frame.group_by("role").len().iter_rows():
                kind = ROLE_KINDS.get(role or "")
                if kind:
                    counts[kind] += n
            return counts

        def tables(pick: str) -> dict[str, int]:
            return {
                kind: getattr(self.table(kind), pick).height
                for kind in ("locations", "courses", "classes", "rosters")
            }

        created = {**tables("create"), **by_role(people.create)}
        # a local account written only to note what the SIS said is unchanged to the admin
        noted = people.update.filter(pl.col("account_id").is_in(people.noted.implode()))
        changed = people.update.filter(~pl.col("account_id").is_in(people.noted.implode()))
        updated = {**tables("update"), **by_role(changed)}
        updated["classes"] += self.classes_touched
        unchanged = {
            kind: self.table(kind).unchanged for kind in ("locations", "courses", "classes", "rosters")
        }
        quiet = by_role(noted)
        unchanged.update({kind: people.unchanged.get(kind, 0) + quiet[kind]
                          for kind in ROLE_KINDS.values()})
        return {
            "created": {kind: created[kind] for kind in CHANGE_KINDS},
            "updated": {kind: updated[kind] for kind in CHANGE_KINDS},
            "deactivated": by_role(people.deactivate),
            "removed": {kind: self.table(kind).remove.height for kind in REMOVABLE_KINDS},
            "unchanged": {kind: unchanged[kind] for kind in CHANGE_KINDS},
        }


# --- planning ----------------------------------------------------------------------------------


def _split(model: Model, kind: str) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """(records to upsert, tombstones or None for a bulk kind)."""
    frame = model.frame(kind)
    active = pl.col("active").fill_null(True)
    if kind in model.delta:
        return frame.filter(active), frame.filter(~active)
    return frame.filter(active), None


def plan_sync(
    snapshot: Snapshot,
    model: Model,
    tenant: TenantSettings,
    today: date,
    issues: IssueLog,
) -> Plan:
    """Diff ``model`` (filtered and patched) against ``snapshot``.

    Issues found while planning (``MATCH_AMBIGUOUS``, ``ACCOUNT_NAME_FAILED``,
    ``ACCOUNT_LOCAL``) go to ``issues``; with an error among them the plan is
    ``failed`` and must not be applied (its counts are still shown).
    """
    log = IssueLog()
    people, person_tombstones = _plan_people(snapshot, model, tenant, today, log)

    class_tombstones = pl.Series("class_id", [], pl.String)
    frames: dict[str, tuple[pl.DataFrame, pl.DataFrame | None]] = {
        kind: _split(model, kind)
        for kind in ("locations", "courses", "classes", "instructors", "rosters")
    }
    classes_dead = frames["classes"][1]
    if classes_dead is not None:
        class_tombstones = classes_dead["class_id"].drop_nulls().unique()

    tables: dict[str, TableChanges] = {}
    unchanged_classes = pl.Series("class_id", [], pl.String)
    for kind, (upserts, tombstones) in frames.items():
        cascade: pl.DataFrame | None = None
        if kind in ("instructors", "rosters") and (
            class_tombstones.len() or person_tombstones.len()
        ):
            person_col = "student_id" if kind == "rosters" else "person_id"
            dead = pl.col("class_id").is_in(class_tombstones.implode()) | pl.col(
                person_col
            ).is_in(person_tombstones.implode())
            upserts = upserts.filter(~dead)
            cascade = snapshot.frame(kind).filter(dead)
        changes, unchanged_keys = _diff(snapshot.frame(kind), upserts, tombstones, kind, cascade)
        tables[kind] = changes
        if kind == "classes":
            unchanged_classes = unchanged_keys["class_id"]

    # A class whose instructor list changed is an updated class.
    instr = tables["instructors"]
    touched = (
        pl.concat([instr.create["class_id"], instr.update["class_id"], instr.remove["class_id"]])
        .unique()
    )
    touched_unchanged = unchanged_classes.filter(unchanged_classes.is_in(touched.implode()))
    classes = tables["classes"]
    stored_only = touched.filter(
        ~touched.is_in(model.classes["class_id"].implode())
        & touched.is_in(snapshot.classes["class_id"].implode())
        & ~touched.is_in(classes.remove["class_id"].implode())
    )
    tables["classes"] = TableChanges(
        classes.create,
        classes.update,
        classes.remove,
        classes.unchanged - touched_unchanged.len(),
    )

    issues.merge(log)
    return Plan(
        base=snapshot,
        today=today,
        people=people,
        failed=log.has_errors(),
        classes_touched=touched_unchanged.len() + stored_only.len(),
        **tables,
    )


def _diff(
    old: pl.DataFrame,
    upserts: pl.DataFrame,
    tombstones: pl.DataFrame | None,
    kind: str,
    cascade: pl.DataFrame | None,
) -> tuple[TableChanges, pl.DataFrame]:
    """Created / updated / removed rows of one table, and the unchanged keys."""
    key = list(KEYS[kind])
    values = list(TABLE_VALUES[kind])
    # Gathering rows from a frame in many chunks (the CSV reader's; polars reads the
    # cache in several) is much slower than from one, and one copy into a single chunk
    # is cheap (benchmarks/README.md, "Measurements behind the code").
    new = snapshot_frame(kind, upserts).drop_nulls(key).rechunk()
    old = old.rechunk()
    new_hash = new.select(key).hash_rows()
    if new_hash.n_unique() < new.height:  # an id twice (or a hash collision): the first row counts
        first = pl.col(key[0]) if len(key) == 1 else pl.struct(key)
        new = new.filter(first.is_first_distinct())
        new_hash = new.select(key).hash_rows()
    new_rows, old_rows, matched_new, matched_old = _pairs(new, new_hash, old, key)
    differs = pl.repeat(False, new_rows.len(), eager=True)
    for value in values:
        differs = differs | matched_new[value].ne_missing(matched_old[value])
    create = new.filter(~_marked(new.height, new_rows)).select(*key, *values)
    update = matched_new.filter(differs).select(*key, *values)
    unchanged = matched_new.filter(~differs).select(key)
    if tombstones is None:
        remove = old.filter(~_marked(old.height, old_rows)).select(key)
    else:
        remove = (
            snapshot_frame(kind, tombstones)
            .select(key)
            .drop_nulls()
            .unique(maintain_order=True)
            .join(old.select(key), on=key, how="semi")
            .join(new.select(key), on=key, how="anti")
        )
    if cascade is not None and cascade.height:
        # A row the upload itself upserts (an enrolment moved to the person's new SIS
        # id) is updated, not removed: both would delete it.
        cascaded = cascade.select(key).join(new.select(key), on=key, how="anti")
        remove = pl.concat([remove, cascaded]).unique(maintain_order=True)
    return TableChanges(create, update, remove, unchanged.height), unchanged


def _pairs(
    new: pl.DataFrame, new_hash: pl.Series, old: pl.DataFrame, key: list[str]
) -> tuple[pl.Series, pl.Series, pl.DataFrame, pl.DataFrame]:
    """The rows of ``new`` and ``old`` with equal keys, in ``new`` order: their row
    numbers on both sides, and the rows themselves.

    Keys are unique on both sides. The join is on a 64-bit hash of the key
    (faster than on the strings; benchmarks/README.md); pairs whose keys differ (a hash
    collision) are then dropped, so a collision costs a comparison, never a
    wrong match.
    """
    def numbered(hashes: pl.Series, name: str) -> pl.DataFrame:
        return pl.DataFrame({"_hash": hashes}).with_row_index(name)

    pairs = numbered(new_hash, "_new").join(
        numbered(old.select(key).hash_rows(), "_old"),
        on="_hash",
        how="inner",
        maintain_order="left",
    )
    new_rows, old_rows = pairs["_new"], pairs["_old"]
    matched_new, matched_old = new[new_rows], old[old_rows]
    same = pl.repeat(True, pairs.height, eager=True)
    for column in key:
        same = same & (matched_new[column] == matched_old[column])
    if not same.all():
        new_rows, old_rows = new_rows.filter(same), old_rows.filter(same)
        matched_new, matched_old = matched_new.filter(same), matched_old.filter(same)
    return new_rows, old_rows, matched_new, matched_old


def _marked(height: int, rows: pl.Series) -> pl.Series:
    """A mask of ``height`` rows, true at the row numbers ``rows``."""
    return pl.repeat(False, height, eager=True).scatter(rows, True)


def _name_rules(tenant: TenantSettings) -> dict[str, NameRule]:
    """The account name rule per role (``accounts_by_role``, the tenant's as default)."""
    rules: dict[str, NameRule] = {}
    roles: tuple[AccountRole, ...] = ("student", "staff")
    for role in roles:
        account_format, domain = tenant.role_account(role)
        own = getattr(tenant.accounts_by_role, role).account_format
        setting = f"accounts_by_role.{role}.account_format" if own else "account_format"
        rules[role] = NameRule(account_format, domain, setting)
    return rules


def _plan_people(
    snapshot: Snapshot,
    model: Model,
    tenant: TenantSettings,
    today: date,
    log: IssueLog,
) -> tuple[PeopleChanges, pl.Series]:
    """The people part of the plan, and the person_ids tombstoned by a delta."""
    upserts, tombstones = _split(model, "people")
    incoming = upserts.filter(pl.col("person_id").is_not_null())
    if incoming["person_id"].hash().n_unique() < incoming.height:  # distinct hashes: no repeat
        incoming = incoming.unique(subset="person_id", keep="first", maintain_order=True)
    old = snapshot.people

    # 1. By SIS id.
    incoming = incoming.join(
        old.select("account_id", "person_id"), on="person_id", how="left", maintain_order="left"
    )
    # 2. Duplicate prevention for the unknown ones.
    matched = pl.DataFrame(schema=MATCHED_SCHEMA)
    if tenant.duplicates.prevent:
        matches = match_duplicates(
            incoming.filter(pl.col("account_id").is_null()),
            old,
            incoming["account_id"].drop_nulls(),
            tenant.duplicates.match_on,
            log,
            require_match=tenant.duplicates.require_match,
        )
        matched = matches.matched
        incoming = (
            incoming.filter(~pl.col("person_id").is_in(matches.ambiguous.implode()))
            .join(
                matches.matched.select("person_id", _matched="account_id"),
                on="person_id",
                how="left",
                maintain_order="left",
            )
            .with_columns(account_id=pl.coalesce("account_id", "_matched"))
            .drop("_matched")
        )

    # 3. New people get account names (model order decides who gets the plain name).
    new = incoming.filter(pl.col("account_id").is_null())
    # Each role renders its own format and domain; collisions are resolved across both.
    accounts = assign_accounts(
        new, tenant.account_format, tenant.account_domain, snapshot.taken_accounts, log,
        by_role=_name_rules(tenant),
    )
    new = new.with_columns(account=accounts).filter(pl.col("account").is_not_null())
    create = snapshot_frame(
        "people",
        new.with_columns(
            account_id=pl.lit(None, pl.Int64),
            previous_ids=pl.lit([], pl.List(pl.String)),
            status=pl.lit(ACTIVE),
            source=pl.lit(SIS),
            deactivated_on=pl.lit(None, pl.Date),
        ),
    )

    # 4. Existing accounts: compare.
    seen = incoming.filter(pl.col("account_id").is_not_null())
    old_cols = [pl.col(name).alias(f"{name}__old") for name in PEOPLE_SCHEMA if name != "account_id"]
    both = seen.select("account_id", "_file", "_line", *PERSON_FIELDS, "person_id").join(
        old.select("account_id", *old_cols), on="account_id", how="left", maintain_order="left"
    )
    if model.dropped_emails:  # an unusable email in the upload never wipes a stored one
        both = both.with_columns(email_address=pl.when(
            pl.col("person_id").is_in(list(model.dropped_emails))
            & pl.col("email_address").is_null()).then(pl.col("email_address__old"))
            .otherwise(pl.col("email_address")))
    local = pl.col("source__old") == LOCAL
    imported = pl.col("source__old") == IMPORTED
    differs = [pl.col(f).ne_missing(pl.col(f"{f}__old")) for f in PERSON_FIELDS]
    sis_changed = pl.col("_sis_changed")
    id_changed = pl.col("person_id") != pl.col("person_id__old")
    back = pl.col("status__old") == INACTIVE
    # In two steps: polars evaluates the list comparison far faster as a column of its
    # own than inside each of the three expressions below (benchmarks/README.md).
    # What the SIS says of a local account, as text: reported once per change, not on
    # every run (Apple School Manager: the account is no longer the SIS's).
    seen_now = pl.concat_str(
        [(pl.col(f).list.join(",") if f == "location_ids" else pl.col(f).cast(pl.String))
         .fill_null("") for f in PERSON_FIELDS], separator="\x1f")
    both = both.with_columns(_sis_changed=pl.any_horizontal(differs),
                             _seen_now=pl.when(local).then(seen_now))
    news = local & pl.col("_sis_changed") & pl.col("_seen_now").ne_missing(
        pl.col("sis_seen__old"))
    both = both.with_columns(
        _write=(sis_changed & ~local) | id_changed | back | imported | news,
        _back=back,
        _ignored=news,
    )
    _warn_local(both, differs, log)
    written = both.filter("_write")
    noted = written.filter(local & ~(id_changed | back))["account_id"]
    update = snapshot_frame(
        "people",
        written.select(
            "account_id",
            "person_id",
            *[
                pl.when(local).then(pl.col(f"{f}__old")).otherwise(pl.col(f)).alias(f)
                for f in PERSON_FIELDS
            ],
            # an import's placeholder id was never the SIS's (whatever the account's
            # source became since: edited, reset)
            previous_ids=pl.when(
                (pl.col("person_id") != pl.col("person_id__old"))
                & ~pl.col("person_id__old").str.starts_with(PLACEHOLDER_PREFIX)
            )
            .then(
                pl.concat_list(
                    [
                        pl.col("previous_ids__old").fill_null(pl.lit([], pl.List(pl.String))),
                        pl.col("person_id__old"),
                    ]
                )
            )
            .otherwise(pl.col("previous_ids__old")),
            account=pl.col("account__old"),
            status=pl.lit(ACTIVE),
            # The SIS sends it: an imported account is the SIS's from now on.
            source=pl.when(imported).then(pl.lit(SIS)).otherwise(pl.col("source__old")),
            sis_seen=pl.when(local & pl.col("_sis_changed")).then(pl.col("_seen_now")),
            deactivated_on=pl.lit(None, pl.Date),
        ),
    )
    unchanged_rows = both.filter(~pl.col("_write"))

    # 5. Deactivations.
    if tombstones is None:
        gone = old.filter(
            (pl.col("status") == ACTIVE)
            & ~pl.col("account_id").is_in(seen["account_id"].implode())
        )
        dead_ids = pl.Series("person_id", [], pl.String)
    else:
        dead_ids = tombstones["person_id"].drop_nulls().unique()
        dead_ids = dead_ids.filter(~dead_ids.is_in(incoming["person_id"].implode()))
        # An account taken over by a new SIS id (duplicate prevention) stays active.
        gone = old.filter(
            (pl.col("status") == ACTIVE)
            & pl.col("person_id").is_in(dead_ids.implode())
            & ~pl.col("account_id").is_in(seen["account_id"].implode())
        )
    # A local account is no longer the SIS's: its absence is reported, not acted on. An
    # imported one never was: the SIS not sending it is the normal case, so not reported.
    kept_local = gone.filter(pl.col("source") == LOCAL)
    gone = gone.filter(~pl.col("source").is_in([LOCAL, IMPORTED]))
    _report_local_absent(kept_local, log)
    deactivate = gone.with_columns(status=pl.lit(INACTIVE), deactivated_on=pl.lit(today))

    role_counts = dict.fromkeys(ROLE_KINDS.values(), 0)
    for role, n in unchanged_rows.group_by("role__old").len().iter_rows():
        kind = ROLE_KINDS.get(role or "")
        if kind:
            role_counts[kind] += n
    changes = PeopleChanges(
        create=create,
        update=update,
        deactivate=snapshot_frame("people", deactivate),
        reactivated=int(written["_back"].sum()),
        unchanged=role_counts,
        noted=noted,
        matched=matched,
    )
    return changes, dead_ids


def _report_local_absent(local: pl.DataFrame, log: IssueLog) -> None:
    """One ``ACCOUNT_LOCAL`` warning per local account the SIS no longer sends."""
    if local.height == 0:
        return
    log.extend(
        person_issues(
            local.with_columns(_file=pl.lit(None, pl.String), _line=pl.lit(None, pl.Int64)),
            pl.lit("account ") + pl.col("account") + pl.lit(" (person '") + pl.col("person_id")
            + pl.lit("') is a local account and the SIS no longer sends it; it stays active. "
                     "Hand it back to the SIS with `rosterdrop people reset "),
            pl.col("person_id"),
            pl.lit(" --tenant T` if the SIS should decide (the next sync then deactivates it)."),
        ),
        Code.ACCOUNT_LOCAL,
    )


def _warn_local(both: pl.DataFrame, differs: list[pl.Expr], log: IssueLog) -> None:
    """One ``ACCOUNT_LOCAL`` warning per locally edited person with SIS values not applied."""
    ignored = both.filter("_ignored")
    if ignored.height == 0:
        return
    listed = [
        pl.when(d).then(
            pl.lit(f"{name} ")
            + quoted(pl.col(name).list.join(",") if name == "location_ids" else pl.col(name))
        )
        for name, d in zip(PERSON_FIELDS, differs, strict=True)
    ]
    log.extend(
        person_issues(
            ignored,
            pl.lit("account ") + pl.col("account__old") + pl.lit(" (person '")
            + pl.col("person_id")
            + pl.lit("') was edited locally, so these SIS values were not applied: "),
            pl.concat_str(listed, separator=", ", ignore_nulls=True),
            pl.lit(
                "; edit the account again with `rosterdrop people set` "
                "if they should apply."
            ),
        ),
        Code.ACCOUNT_LOCAL,
    )


# --- the plan applied to a snapshot ------------------------------------------------------------


def advance(
    plan: Plan,
    *,
    account_ids: pl.Series | None = None,
    today: date | None = None,
) -> Snapshot:
    """The snapshot that applying ``plan`` to ``plan.base`` yields.

    ``account_ids`` are the ids the store gave the created people, in
    ``plan.people.create`` order (default: counting on from the largest id);
    ``today`` is the date recorded for deactivations (default ``plan.today``).
    """
    base = plan.base
    people = plan.people
    created = people.create
    if account_ids is None:
        start = int(base.people["account_id"].max() or 0) + 1  # type: ignore[arg-type]
        account_ids = pl.int_range(start, start + created.height, eager=True)
    created = created.with_columns(account_id=account_ids.cast(pl.Int64))
    deactivated = people.deactivate.with_columns(deactivated_on=pl.lit(today or plan.today))
    replaced = pl.concat([people.update["account_id"], deactivated["account_id"]])
    new_people = pl.concat(
        [
            base.people.filter(~pl.col("account_id").is_in(replaced.implode())),
            people.update,
            deactivated,
            created,
        ]
    )
    frames: dict[str, pl.DataFrame] = {"people": new_people}
    for kind in ("locations", "courses", "classes", "instructors", "rosters"):
        changes = plan.table(kind)
        key = list(KEYS[kind])
        gone = pl.concat([changes.remove.select(key), changes.update.select(key)])
        frames[kind] = pl.concat(
            [
                base.frame(kind).join(gone, on=key, how="anti"),
                changes.update,
                changes.create,
            ]
        )
    taken = pl.concat([base.taken_accounts, created["account"]]).unique(maintain_order=True)
    return Snapshot(
        **frames, taken_accounts=taken.rename("account"), revision=base.revision + 1
    )


def clear_classes(snapshot: Snapshot, today: date) -> Plan:
    """The year-end plan (``rosterdrop classes clear``): every class, instructor row and
    roster of the tenant removed; people, locations and courses untouched."""
    empty_people = snapshot_frame("people")

    def everything(kind: str) -> TableChanges:
        empty = snapshot_frame(kind)
        return TableChanges(empty, empty, snapshot.frame(kind).select(KEYS[kind]))

    return Plan(
        base=snapshot, today=today,
        people=PeopleChanges(create=empty_people, update=empty_people,
                             deactivate=empty_people),
        locations=TableChanges.nothing("locations"), courses=TableChanges.nothing("courses"),
        classes=everything("classes"), instructors=everything("instructors"),
        rosters=everything("rosters"),
    )
