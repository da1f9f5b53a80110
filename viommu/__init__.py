"""viommu: a hardware virtio-iommu."""
