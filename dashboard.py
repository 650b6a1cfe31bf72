"""The script each dashboard session runs: the page configuration, the navigation and the shared sidebar.

`streamlit run app.py` serves it (app.py is the server: it warms the process up at start). Page scripts live in
views/, not pages/. With a pages/ folder beside the entry script, Streamlit 1.67 runs the FIRST request of a freshly
started server through its legacy pages shim (`runtime/scriptrunner/script_runner.py`,
`PagesManager.uses_pages_directory`): a shared deep link opened first would then run its page without this script
(no page config, no navigation), and every helper module in the folder would be listed as a page. st.navigation
itself is not ignored.
"""

import streamlit as st

from analysis.jobs import SCRIPT_RUNS, serialise_ast_parsing

PAGES = [
    st.Page("views/overview.py", title="Overview", icon=":material/dashboard:", default=True),
    st.Page("views/explorer.py", title="Retrieval explorer", icon=":material/manage_search:", url_path="explorer"),
    st.Page("views/attribution.py", title="Why this result?", icon=":material/insights:", url_path="attribution"),
    st.Page("views/space.py", title="Shared space", icon=":material/scatter_plot:", url_path="space"),
    st.Page("views/bias.py", title="Source bias", icon=":material/balance:", url_path="bias"),
    st.Page("views/review.py", title="Review", icon=":material/rate_review:", url_path="review"),
    st.Page("views/compare.py", title="Compare checkpoints", icon=":material/compare:", url_path="compare"),
]

serialise_ast_parsing()  # before any background thread: sessions and jobs parse at once (CPython 3.11)
with SCRIPT_RUNS.running():  # app.py's start-up warm-up steps aside while this runs, this first import included
    from views.common import sidebar, track_page

    st.set_page_config(page_title="CHTN review", page_icon=":material/manage_search:", layout="wide")
    navigation = st.navigation(PAGES)
    track_page(navigation.url_path)
    sidebar(review_database=navigation.url_path in ("review", "compare"))  # here: the same widgets on every page
    navigation.run()
