# The use-case smoke pack: each recipe in docs/use-cases/ run end to end through a real MCP stdio
# client on real guests (scenarios: test/use-cases/recipes.ts). Every target sets up first
# (scripts/setup.sh --no-run: idempotent, builds what changed), so it works from a fresh clone.
NODE := node_modules/.bin/node
SMOKE := $(NODE) --import ./dist/test/helpers/isolated-home.js dist/test/use-cases/smoke-main.js
SMOKE_TARGETS := smoke-cold-start-validation smoke-repro-fix-loop smoke-parallel-workspaces smoke-untrusted-inspection smoke-review-eval

.PHONY: setup test smoke-use-cases $(SMOKE_TARGETS)

setup:
	bash scripts/setup.sh --no-run

test:
	bash scripts/test.sh

smoke-use-cases: setup
	$(SMOKE)

$(SMOKE_TARGETS): setup
	$(SMOKE) $@
