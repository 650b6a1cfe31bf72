"""CHTN review dashboard: `streamlit run app.py` opens the embedded sample, no configuration needed.

Page scripts live in views/, not pages/: a folder named pages/ beside the entry script switches
Streamlit into its legacy multipage mode, which ignores st.navigation and lists every module as a page.
"""
import streamlit as st

st.set_page_config(page_title="CHTN review", page_icon=":material/manage_search:", layout="wide")

navigation = st.navigation([
    st.Page("views/overview.py", title="Overview", icon=":material/dashboard:", default=True),
    st.Page("views/retrieval.py", title="Retrieval explorer", icon=":material/manage_search:", url_path="retrieval"),
    st.Page("views/attribution.py", title="Why this result?", icon=":material/insights:", url_path="attribution"),
    st.Page("views/space.py", title="Shared space", icon=":material/scatter_plot:", url_path="space"),
])
navigation.run()
