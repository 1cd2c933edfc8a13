"""Benchmarks: the problem every timing measures (:mod:`gradstop.bench.problem`, shared by ``benchmarks/`` and the
paired-timing scripts) and the report built from pytest-benchmark's JSON (:mod:`gradstop.bench.report`)."""
