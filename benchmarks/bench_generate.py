"""Benchmark the embedded benchmark's generator: time and determinism at the default size (64).

Generates benchmark version 3 (nine categories, 80 train / 40 good / >= 40 anomalous test images each, plus the
objects' foreground masks) twice into temporary folders, and version 2 once for reference. Reports the wall time
of each run, the ratio to the issue's 60 s target (on the kit's 2-core machine), the number of files and bytes,
and whether the two version-3 runs are byte-identical (sha256 over every file, ``lib.data.fingerprint``).

Run:  python benchmarks/bench_generate.py [--size 64] [--seed 0]
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

from lib import data

TARGET_S = 60.0


def _generate(root: Path, size: int, seed: int, version: int) -> float:
    t0 = time.perf_counter()
    data.make_benchmark(root, size=size, seed=seed, version=version)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    print(f"cores: {os.cpu_count()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        runs = [_generate(tmp / f"v3_{i}", a.size, a.seed, 3) for i in range(2)]
        t2 = _generate(tmp / "v2", a.size, a.seed, 2)
        files = [p for p in (tmp / "v3_0").rglob("*") if p.is_file()]
        same = data.fingerprint(tmp / "v3_0") == data.fingerprint(tmp / "v3_1")
        print(f"version 3, size {a.size}: {runs[0]:.1f} s and {runs[1]:.1f} s "
              f"({len(files)} files, {sum(p.stat().st_size for p in files) / 1e6:.1f} MB)")
        print(f"  ratio to the {TARGET_S:.0f} s target: {max(runs) / TARGET_S:.2f} "
              f"({'meets' if max(runs) <= TARGET_S else 'misses'} it)")
        print(f"  byte-identical on re-run: {same}")
        print(f"version 2, size {a.size}: {t2:.1f} s (reference)")
        if not same:
            raise SystemExit("the two runs differ: the generator is not deterministic")


if __name__ == "__main__":
    main()
