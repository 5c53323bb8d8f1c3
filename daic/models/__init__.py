"""Networks (``networks``), the model registry on the object store (``registry``), model cards
(``card``), lineage graphs (``lineage``) and oracle references (``reference``)."""
