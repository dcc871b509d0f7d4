"""What every flow shares: the plain-data DAG description's edge analysis (``dagdesc``)."""
