"""Pictures, clips and data sets on disk (files, labels, splits, transforms, loaders); timing spans.
Imports no other har_core subpackage."""
