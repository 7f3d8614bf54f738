"""The model registry: named, versioned models with lineage, aliases moved through a gate, and rollback.

Built on the MLflow Model Registry in the store hone already tracks runs into (SQLite in `.hone/` unless
`track.uri` or HONE_TRACKING_URI names another): versions, tags and aliases are MLflow's. hone adds what a
fine-tuned model needs on top:

- a version is a frozen copy of the run folder (manifest, config, training summary, weights, the ladders
  that evaluated it, the dataset card), content-hashed, so deleting `runs/` breaks nothing and a tampered
  or truncated copy is refused when it is loaded;
- its lineage (base model and its weights' sha256, adapter settings, chat template, system prompt,
  dataset version, config, code version, training summary, evaluations) as version tags;
- a promotion gate that reads the ladder (target, paired bootstrap against the alias's holder, general
  capability, servability) and an audit trail of every promotion, refusal and rollback.
"""
