"""The sweep runner, the only package that imports Ray and Optuna: runs a SweepSpec as one Tune experiment.

    pdd sweep run sweeps/smoke.yaml                                   # an embedded Ray, started for the run
    pdd sweep submit sweeps/table1.yaml --address http://127.0.0.1:8265 --storage s3://bucket/pdd

Two stages share one queue (`searcher`). Search: every suggestion goes to one Optuna TPE study per (cell,
method entry); each study evaluates the paper's point first and maximises validation accuracy. Confirm: each
study's best validation config, once its search is over, and every unsearched entry (random), rerun once per
subset seed with the sweep's evaluation seeds; reports show these rows.

Modules: `session` (connect to or start Ray), `driver` (the Tune experiment), `searcher`, `trainable` (one trial
inside Tune), `storage` (the sweep directory), `progress` (`pdd sweep status`), `driver_log` (`pdd sweep
overhead`), `jobs` (Ray Jobs), `journal` (every study copied to an Optuna journal as trials end) and `dashboard`
(`pdd sweep dashboard`: optuna-dashboard on it, behind a token).

A sweep directory, `<storage>/<name>/`, holds everything: one Parquet row per trial (pdd.results) and, skipped by
Parquet readers, `_sweep.json` (the validated spec, so a sweep resumes without its file), `_teacher.pt`,
`_optuna-journal.log`, `_artifacts/` and Tune's experiment under `_tune/`. Multi-node runs need it on storage
every node reaches: a shared filesystem path or an s3:// URI (rows are then written on the node and uploaded, and
the driver mirrors them, and writes its journal, to results/<name>/).
"""
