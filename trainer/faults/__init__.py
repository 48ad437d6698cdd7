"""How a run fails safely: every wait has a deadline (watchdog), stop signals become a checkpoint
(signals), a failure on one rank reaches every rank (agreement), a failed write names its file
and cause (disk_errors), and each kind of fault ends the process with its own exit status (exits;
docs/faults.md lists them)."""
