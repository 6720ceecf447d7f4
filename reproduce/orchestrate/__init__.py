"""Running many runs: profiles (data: reproduce/profiles/*.yaml), the run queue, local W&B sweeps.
It starts training commands as subprocesses and calls measure (speed) and report (tables) after."""
