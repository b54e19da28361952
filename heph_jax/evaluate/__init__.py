"""Function-calling evaluation: BFCL questions -> prompts -> generations -> parsed calls -> AST score."""
