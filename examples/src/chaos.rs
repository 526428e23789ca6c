//! The failover experiment: partition a region from the others under bot load, heal, and
//! crash game servers mid-match.
