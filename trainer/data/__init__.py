"""Where the next batch comes from: the shards streamed every epoch (stream), or decoded once onto
the training device (device); `choose` picks one for --loader."""
