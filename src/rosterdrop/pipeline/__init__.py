"""The pure core: an upload's bytes and settings in, issues, a model and a plan out.

No database, network, clock or log: every step is a function of its inputs,
which is what the hypothesis tests lean on. In the order a run takes them:

=============  ==============================================================
archive        open the ZIP: vet the central directory, inflate each entry
detect         which layout the files are (OneRoster 1.1/1.2, ASM), the manifest
read           each CSV to string columns (``polars``), with line numbers
validate       required values, enumerations, IDs, dates, uniqueness
mapping        the files to one directory ``model`` (people, classes, …)
filter         leave out what the tenant's settings exclude
patch          drop dangling references instead of failing, when allowed
match          duplicate prevention: incoming people against existing accounts
accounts       managed account names
plan           the diff against the directory ``snapshot``: rows to write
guard          hold a run that would change too much
=============  ==============================================================

``check`` runs archive → patch and is what ``rosterdrop validate`` and every
run start with; ``issues`` and ``messages`` carry what the steps find;
``headers`` and ``layouts`` are the formats' columns; ``retention`` chooses
what a purge removes. The I/O shells around this package (``runs``, ``store``,
``sftp``, ``daemon``, ``mail``, ``sources``) import it, never the reverse
(import-linter contracts in pyproject.toml).
"""
