"""Between the front doors and the workers: replicas, replica sets, endpoints and routing."""
