"""The pipeline's stages as PTransforms: map, order, permit, deliver."""
