.PHONY: demo test setup crds chart deploy lint bench fleetsim chaos

demo:   ## set everything up and show the gate at work, end to end
	bash hack/demo.sh

test:   ## install what is needed, then lint, types, unit and e2e tests
	bash hack/test.sh $(ARGS)

setup:  ## only install (venv, SoftHSM2, control-plane binaries)
	bash hack/setup.sh

crds:   ## regenerate crds/*.yaml from the pydantic models, and what the chart takes from them
	.venv/bin/python -m flashgate.api.crdgen
	.venv/bin/python hack/chart.py

chart:  ## the chart's CRD copies and values schema, and deploy/ rendered from the chart
	.venv/bin/python hack/chart.py

deploy: chart

bench:  ## install what is needed, then the benchmarks: figures and charts in bench/results/
	bash hack/bench.sh $(ARGS)

fleetsim:  ## install what is needed, then the fleet simulation: six scenarios, 1,000 devices each
	bash hack/setup.sh
	mkdir -p bench/results
	.venv/bin/python bench/bench_fleet.py $(ARGS) | tee bench/results/fleet.md

chaos:  ## install what is needed, then the chaos loop: faults and invariants (ARGS="--iterations 100" for the long run)
	bash hack/setup.sh
	PYTHONPATH=hack .venv/bin/python -m chaos $(ARGS)
