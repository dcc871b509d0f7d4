"""The frontend: split markers in the model source (``markers``), the leaf-aware torch.fx trace with shapes
(``capture``), the cuts and the DAG slicing into partitions with ports (``partitioner``), cuts inside a layer
(``layersplit``)."""
