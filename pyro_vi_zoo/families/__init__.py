"""Model families: each module builds the :class:`~pyro_vi_zoo.family.Family` of one model as ``FAMILY``
(listed in :mod:`pyro_vi_zoo.registry`, imported on first use)."""
