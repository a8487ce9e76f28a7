"""Where untrusted work runs: the process pool that hosts reward plugins with a hard deadline per sample (pool,
pool_worker), the bounded child for sympy (bounded), the code sandbox (sandbox, its in-sandbox harness and jail),
and the process and cgroup plumbing they share (procs, cgroups). Nothing here knows what a reward computes."""
