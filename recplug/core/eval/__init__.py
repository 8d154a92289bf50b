"""The evaluation layer: ranking metrics, vector search, the evaluator and GRMF-X."""
