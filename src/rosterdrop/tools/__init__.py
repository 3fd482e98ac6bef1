"""Tools beside the service: ``doctor`` (is this machine ready?), ``docs`` (the
configuration reference from the settings model), ``sample`` (realistic exports)."""
