#!/bin/bash
# TB1 verifier: passes when the tests pass (exit 0, no FAILED in the output)
python3 "$TEST_DIR/test_outputs.py" -v
