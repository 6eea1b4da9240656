"""fvis's benchmark suite: ``python -m benchmarks`` (``make bench``) runs every benchmark
and writes ``bench.json`` and ``bench.md``; ``--smoke`` runs one pair at tiny sizes (CI)."""
