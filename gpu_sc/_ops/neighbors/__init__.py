"""The neighbour-search family, on a dense embedding (numpy or cupy, cells x dimensions) rather
than `Parts`: exact search (`knn`), search through other backends refined to the same lists
(`knn_approx`), both ranking candidates through `candidates`, and the graph weights from the
lists (`connectivities`)."""
