"""Pure domain: catalog model, parameter validation, policy, run states, plans. No SDK imports, no I/O."""
