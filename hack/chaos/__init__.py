"""The chaos loop and its invariant checker (issue 13).

It lives in hack/ beside what it drives (controlplane.py, s3server.py, localgate.py): it is a
tool that runs the gate's processes on this machine and kills them, not part of what is shipped
(flashgate/ is the package that is installed and deployed). Its parts:
- invariants.py: the checker, pure (observations in, violations out);
- observer.py: what the checker needs, collected (watches, metrics);
- proxy.py: the fault-injecting proxy in front of the API server;
- world.py: the fleets and the mixed batches, signed for real;
- system.py: the processes under test and how each is killed and started again;
- loop.py: the loop (`make chaos`, `python -m chaos`), bench/chaos_long.py the long run.
"""
