import streamlit as st

from har_core.evaluation.analysis import data_folder, overview_table, starts_from, training_in_words
from har_core.evaluation.ensemble import stored_headline
from har_core.evaluation.plots import accuracy_bars
from ui.choices import ensemble_members, sidebar
from ui.common import controls_at_the_foot, figure, glossary, headings_on_one_line, model_columns, need_runs
from ui.sharing import report_maker

selection = sidebar()
st.title("📋 Overview")
need_runs(selection)
shared_data = data_folder(selection.runs)
st.caption("The trained models side by side. Metrics are on each run's held-out test split"
           + (f" of **{shared_data}**." if shared_data else "."))

table = overview_table(selection.runs)
narrow = {"width": "small"}  # every column in sight at 1280 px, the test scores first
# accuracy in percent and macro-F1 to three decimals, as the bars and the model cards below say them
st.dataframe(table.assign(**{"test accuracy": table["test accuracy"] * 100}), hide_index=True, width="stretch",
             column_config={"test accuracy": st.column_config.ProgressColumn(
                                "accuracy", format="%.1f%%", min_value=0, max_value=100, **narrow),
                            "test macro-F1": st.column_config.ProgressColumn(
                                "macro-F1", format="%.3f", min_value=0, max_value=1, **narrow),
                            "parameters (M)": st.column_config.NumberColumn("params", format="%.1f M", **narrow),
                            "input size": st.column_config.NumberColumn("input px", **narrow),
                            "epochs": st.column_config.NumberColumn(**narrow),
                            "data": st.column_config.TextColumn(**narrow),
                            "starts from": st.column_config.TextColumn(
                                help="Where the weights started; the model cards below name the teachers")})
if table["test accuracy"].notna().any():
    st.plotly_chart(figure(accuracy_bars, table.dropna(subset=["test accuracy"])), width="stretch")
members = ensemble_members(selection.runs, key="overview_ensemble")
ensemble = stored_headline([run for run in selection.runs if run.name in members])
if ensemble:
    st.success(f"**Ensemble** of {', '.join(ensemble['runs'])} (mean calibrated probability): "
               f"test accuracy **{ensemble['accuracy']:.1%}**, macro-F1 **{ensemble['macro_f1']:.3f}**")
elif len(members) < 2:
    st.caption("Choose two or more members to see the ensemble's test metrics.")
else:
    st.caption("No ensemble of these members: they need the same classes and the same test images (one split).")

st.download_button("⬇️ Download report (HTML, opens offline)", report_maker(selection), "har_studio_report.html",
                   "text/html", key="overview_report",
                   help="Comparison, F1 per class, confusion matrices, training curves, the most confident mistakes "
                   "with Grad-CAMs and the data set, in one file. The server makes one report at a time: when "
                   "another visitor's is being made, yours follows it. Also: python -m train.report RUNS --out "
                   "report.html")

st.subheader("Model cards")
cells = model_columns(len(selection.runs))
order = list(table["run"])  # the cards in the table's order, the best first
headings_on_one_line("overview_card", order)
controls_at_the_foot("overview_card", while_the_row_is_closed=True)
for i, run in enumerate(sorted(selection.runs, key=lambda run: order.index(run.name))):
    card = run.card
    with cells[i].container(border=True, key=f"overview_card_{i}", height="stretch"):
        st.markdown(f"##### {run.name}")  # h5: the longest name on one line at 1280 px even before any style
        architecture = f"**{card['model']}** · " if card["model"] != run.name else ""  # the heading says it already
        st.markdown(f"{architecture}{card.get('parameters', 0) / 1e6:.1f} million parameters · "
                    f"{card['input_size']} px  \n**starts from:** {starts_from(card, teachers='left out')}"
                    + (f"  \n**trained on:** {card['device'].upper()}" if card.get("device") else "")
                    + (f"  \n**distilled from:** {', '.join(card['distillation']['teachers'])}"
                       if card.get("distillation") else ""),
                    help=f"Weights: {card['pretrained']}" + (f"\n\n{meaning}" if (meaning := glossary(
                        "distilled " * bool(card.get("distillation")) + "linear head " * ("taught" in card))) else ""))
        with st.container():  # the card's foot (controls_at_the_foot): a row's numbers on one line, however long
            test = card.get("metrics", {}).get("test")  # the lines above ("distilled from", a wrapped size)
            if test:
                left, right = st.columns(2, vertical_alignment="bottom")  # presenting, a label may wrap
                left.metric("test accuracy", f"{test['accuracy']:.1%}")
                right.metric("macro-F1", f"{test['macro_f1']:.3f}")
            with st.expander("How it was trained"):  # on every card, folded: the card's answer is its numbers
                told = "  \n".join(filter(None, (training_in_words(card), card.get("notes"))))
                st.caption(told, help=glossary(told))
            with st.expander("card.json"):
                st.json(card, expanded=False)
