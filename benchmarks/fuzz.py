"""The upload fuzzer's long mode: many mutated uploads through the validator and the CLI.

Uses the mutator of ``tests/test_fuzz_uploads.py`` (hypothesis draws the mutation
programs) and the same per-case check: ``check_upload`` and ``rosterdrop
validate --json`` in-process must agree on a JSON verdict with known codes,
raise nothing, and stay within the time and traced-memory bounds. Failures
do not stop the run: each is counted, and its upload written to ``--out`` so
it can be replayed (``rosterdrop validate --json FILE``). A case over the time
bound is run once more before it counts as a failure, so a busy machine does
not pass for a slow case.

    python benchmarks/fuzz.py --examples 20000
    python benchmarks/fuzz.py --examples 2000 --seed 7 --out /tmp/fuzz-failures

Prints cases per second, the verdicts and codes seen, the slowest case and the
largest traced peak; exit status 1 when any case failed.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import sys
import tempfile
import time
import traceback
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, seed, settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from test_fuzz_uploads import Mutation, Verdict, check_both, mutations


def run(examples: int, out: Path, random_seed: int) -> int:
    statuses: collections.Counter[str] = collections.Counter()
    codes: collections.Counter[str] = collections.Counter()
    failures: list[tuple[str, str]] = []
    retimed: list[str] = []
    slowest: tuple[float, str] = (0.0, "")
    biggest: tuple[float, str] = (0.0, "")
    done = 0
    started = time.perf_counter()

    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)

        @seed(random_seed)
        @settings(max_examples=examples, deadline=None, database=None,
                  phases=[Phase.generate], suppress_health_check=list(HealthCheck))
        @given(mutations())
        def one(mutation: Mutation) -> None:
            nonlocal done, slowest, biggest
            raw = mutation.build()
            digest = hashlib.sha256(raw).hexdigest()[:16]
            try:
                try:
                    verdict: Verdict = check_both(raw, folder)
                except AssertionError as exc:
                    if " took " not in str(exc):
                        raise
                    # Over the time bound: once more, to tell a slow case from a busy machine.
                    verdict = check_both(raw, folder)
                    retimed.append(str(exc))
            except Exception as exc:  # a finding: keep going, keep the upload
                out.mkdir(parents=True, exist_ok=True)
                (out / f"{digest}.zip").write_bytes(raw)
                (out / f"{digest}.txt").write_text(
                    f"{mutation!r}\n\n{traceback.format_exc()}", encoding="utf-8")
                failures.append((digest, f"{type(exc).__name__}: {exc}".splitlines()[0]))
                statuses["FAILURE"] += 1
            else:
                statuses[verdict.status] += 1
                codes.update(verdict.codes)
                slowest = max(slowest, (verdict.seconds, repr(mutation)))
                biggest = max(biggest, (verdict.peak_mib, repr(mutation)))
            done += 1
            if done % 1000 == 0:
                rate = done / (time.perf_counter() - started)
                print(f"  {done:>7,} cases  {rate:6.1f}/s  {len(failures)} failures",
                      file=sys.stderr)

        one()

    elapsed = time.perf_counter() - started
    print(f"fuzz: {done:,} cases in {elapsed:.1f} s = {done / elapsed:.1f} cases/s "
          f"(check_upload + validate --json each), seed {random_seed}")
    print("verdicts: " + ", ".join(f"{k} {v:,}" for k, v in statuses.most_common()))
    print(f"codes seen ({len(codes)}): "
          + ", ".join(f"{k} {v:,}" for k, v in codes.most_common()))
    print(f"slowest case: {slowest[0] * 1000:.0f} ms (both paths)  {slowest[1][:300]}")
    print(f"largest traced peak: {biggest[0]:.1f} MiB  {biggest[1][:300]}")
    if retimed:
        print(f"over the time bound once, within it when run again (a busy machine): "
              f"{len(retimed)}")
    if failures:
        print(f"FAILURES: {len(failures)} (uploads and tracebacks in {out})")
        for digest, what in failures[:20]:
            print(f"  {digest}  {what[:200]}")
        return 1
    print("failures: 0")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=2000, help="cases to run (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="hypothesis seed (default 0)")
    parser.add_argument("--out", type=Path, default=Path("fuzz-failures"),
                        help="where failing uploads go (default ./fuzz-failures)")
    args = parser.parse_args(argv)
    if args.examples < 1:
        parser.error("--examples must be at least 1")
    return run(args.examples, args.out, args.seed)


if __name__ == "__main__":
    sys.exit(main())
