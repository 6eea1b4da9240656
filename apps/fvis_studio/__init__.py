"""The fvis studio: a unit explorer in the browser (``streamlit run apps/studio.py``).

* :mod:`.app` — the page: model choice in the sidebar, then one of four views;
* :mod:`.units` — the layer list, the grid of a layer's units and the unit page, read
  from a prebuilt gallery (rendering only what it lacks);
* :mod:`.rendering` — render any units with live progress, intermediate images and
  cancel; :mod:`.history` — every result of the session, side by side;
* :mod:`.explaining` — a digit or an uploaded image, its heatmap for any method, and the
  layer's top channels, each opening its unit page;
* :mod:`.jobs` (renders in a thread), :mod:`.uploads` (files read defensively),
  :mod:`.gallery` (the gallery on disk), :mod:`.state` (session state and navigation).

No module here keeps global state: the model is shared between browser sessions through
``st.cache_resource`` and everything else lives in the session.
"""
