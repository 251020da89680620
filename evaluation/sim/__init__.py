"""The discrete-event cluster simulation: parameters, physics, cluster bookkeeping, scheduler model, engine,
and the adapters through which GuardGrid's own code sees and acts on the simulated cluster."""
