#!/usr/bin/env python3
"""Verify a TDX quote with the independent verifier dcap-qvl (PyPI `dcap-qvl`).

usage: dcap_qvl_verify.py QUOTE COLLATERAL_JSON ROOT_DER NOW

Prints one JSON object: {"ok": true, "status": ..., "advisoryIds": [...]} or
{"ok": false, "error": "..."}. Exits 3 if dcap-qvl is not installed.
Used by the Swift tests to cross-check `keyrack attest verify`.
"""
import json
import sys

try:
    import dcap_qvl
except ImportError:
    sys.stderr.write("dcap-qvl is not installed: run `pip install dcap-qvl`\n")
    sys.exit(3)


def main() -> int:
    quote_path, collateral_path, root_path, now = sys.argv[1:5]
    with open(quote_path, "rb") as f:
        quote = f.read()
    with open(collateral_path) as f:
        collateral = dcap_qvl.QuoteCollateralV3.from_json(f.read())
    with open(root_path, "rb") as f:
        root = f.read()
    try:
        report = dcap_qvl.verify_with_root_ca(quote, collateral, root, int(now))
    except Exception as error:  # dcap-qvl raises ValueError and others
        print(json.dumps({"ok": False, "error": str(error)}))
        return 0
    print(json.dumps({"ok": True, "status": report.status, "advisoryIds": list(report.advisory_ids)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
