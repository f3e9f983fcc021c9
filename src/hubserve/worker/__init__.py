"""Everything that runs inside a replica process: loading, the engine, custom code, codecs, tasks."""
