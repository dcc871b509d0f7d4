"""Planning: the cost model of every job a flow declares (``costmodel``) and the automatic split that balances
the partitions on W workers (``autosplit``)."""
