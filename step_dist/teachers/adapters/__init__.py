"""One module per teacher family; the registry imports them lazily so a missing extra only hurts its users."""
