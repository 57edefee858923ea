import pandas as pd
import streamlit as st

from har_core.evaluation.analysis import agreement
from har_core.models.backend import LABELS
from har_core.evaluation.calibration import default_tta, tta_mismatch
from har_core.models.calibration_maths import DEFAULT_COVERAGE, DEFAULT_TARGET_ACCURACY
from har_core.models.inference import ensemble
from har_core.data.labels import picture_name, spoken
from har_core.data import spans
from har_core.evaluation.plots import answer_card, thumbnail_uri
from har_core.retrieval.similarity import VOTE_K
from ui.answers import WRAPPED_ANSWERS, image_source, invite_to_give_a_picture, newest_picture, numbered, predict
from ui.choices import ensemble_members, follow_link, share_view, sidebar
from ui.common import (backend, controls_at_the_foot, folded_when_presenting, friendly, glossary, image_models,
                       model_rows, models, need_runs)
from ui.sessions import tidy_after
from ui.similar import similar_images
from ui.sureness import doubts, ensemble_temperature, with_sets
from ui.what_if import forget_edits, what_if

selection = sidebar()
st.title("🔮 Predict & compare")
need_runs(selection)
selection = image_models(selection)

# presenting, the answer comes first on a projector's screen: the models and options fold away
with folded_when_presenting("Models and options"):
    follow_link("models", "predict_models", selection.names(), many=True)
    chosen = st.multiselect("Models", selection.names(), default=selection.names(), key="predict_models")
    chosen_runs = [selection.run(n) for n in chosen]
    members = ensemble_members(chosen_runs, key="predict_ensemble")
    options = st.columns(4)
    # short labels: whole at 1280 px
    tta = options[0].toggle("Flip TTA", value=default_tta(chosen_runs), key="predict_tta",
                            help=glossary("TTA") + " Starts as the chosen models were calibrated.")
    similar = options[1].toggle("Similar images", value=True, key="predict_similar",
                                help="Under a card whose More details is open, the training images its model finds "
                                     "most alike (its embedding).")
    k = options[2].slider("Similar images shown", 3, VOTE_K, 6, key="predict_k", disabled=not similar,
                          help=f"Of the {VOTE_K} most similar, whose vote is shown.")
    coverage = options[3].slider("Set coverage", 0.5, 0.99, DEFAULT_COVERAGE, 0.01, format="%.2f", key="predict_coverage",
                                 help="Each model's prediction set holds the true class this often (split conformal "
                                      "prediction, calibrated on the run's val pictures): hard pictures get larger "
                                      "sets.")
share_view(models=chosen)
st.html(WRAPPED_ANSWERS)  # once a page: the answers' reruns (below) leave these in place
controls_at_the_foot("card")


# the answers are a fragment: a photo uploaded reruns them alone, and the sidebar, the models and the options above
# stay as drawn (#41: a room of thirty uploads; each element the page sends costs the browser a few ms). Changing a
# model or an option reruns the whole page, and these answers with it.
@st.fragment(key="predict_answers")
@tidy_after  # closed tabs' photos let go: a room that only uploads reruns no page (ui.sessions)
@spans.fragment_run("Predict & compare")  # the name app.py logs the page's runs under (HAR_SPANS=1)
def answers(selection, chosen_runs: list, members: list[str], tta: bool, similar: bool, k: int,
            coverage: float) -> None:
    images, names = image_source(selection, key="predict")
    newest = newest_picture(images, names, key="predict")  # on every run, none included: the last photo added
    if not images:
        forget_edits()
        invite_to_give_a_picture("predict", "Upload one or more photos, take one with the camera, or pick a sample.")
        return
    if not chosen_runs:  # the photos stay; a blank page said nothing (#41 walk)
        st.info("Choose at least one model under Models and options, above.")
        return
    loaded = models(chosen_runs)
    if not loaded:
        return
    classes = loaded[0].classes  # one class list: the sidebar keeps runs of one (one_class_list)
    for note in {m.backend_note for m in loaded if m.backend_note}:
        st.warning(note, icon="⚠️")
    for note in [m.calibration_note for m in loaded if m.calibration_note]:
        st.caption(f"⚠️ {note}")
    if differs := tta_mismatch([(m.name, m.tta) for m in loaded], tta):
        st.caption(f"⚠️ {differs}")
    engine = (lambda p: f" · {LABELS[p.backend]}") if any(m.backend != "pytorch" for m in loaded) else (lambda p: "")
    if len(images) == 1:  # the photo at once, while the models predict
        left, right = st.columns([1, 3])
        left.image(images[0], caption=picture_name(names[0]), width="stretch")
    with st.spinner(f"{len(loaded)} models predicting {len(images)} image(s)…"):
        predictions = predict(loaded, images, tta)  # cached: other widgets never run the models again
    picked = [p.model for p in predictions if p.model in members]
    members = picked or [p.model for p in predictions]  # none picked: every model, and the caption says so
    member_runs = [selection.run(name) for name in members]
    mean = ensemble(predictions, members, ensemble_temperature(member_runs))  # calibrated members, own temperature
    # "not sure" now; the prediction sets (crepes, SciPy's statistics: a second of a cold server) after the cards
    sure = {p.model: doubts([selection.run(p.model)], p.probs) for p in predictions}
    sure_ensemble = doubts(member_runs, mean)

    if len(images) > 1:  # a row per picture, then the cards of one of them: the newest unless another is chosen
        answer = lambda probs, unsure: f"{spoken(classes[int(probs.argmax())])} {probs.max():.0%}" + (  # noqa: E731
            " ?" if unsure else "")
        # the CSV: each answer in three columns a spreadsheet can sort (the class as the data set names it, the
        # confidence, whether the model is sure: empty when it is not calibrated), each photo as its file is named
        in_columns = lambda who, probs, verdict, j: {  # noqa: E731
            f"{who} answer": classes[int(probs[j].argmax())], f"{who} confidence": round(float(probs[j].max()), 4),
            f"{who} sure": (not verdict.not_sure[j]) if verdict.calibrated else None}
        rows, csv_rows, all_sets = [], [], with_sets(sure_ensemble, member_runs, mean, classes, coverage)
        for j, name in enumerate(names):  # a row per picture: its thumbnail, the ensemble's answer first
            row = {"picture": thumbnail_uri(images[j]), "photo": numbered(j, names),
                   "ensemble": answer(mean[j], sure_ensemble.not_sure[j])}
            csv_row = {"photo": picture_name(name), **in_columns("ensemble", mean, sure_ensemble, j)}
            for prediction in predictions:
                row[prediction.model] = answer(prediction.probs[j], sure[prediction.model].not_sure[j])
                csv_row |= in_columns(prediction.model, prediction.probs, sure[prediction.model], j)
            if all_sets.sets is not None:  # in the CSV only: an eighth column ran off the page at 1280 px
                csv_row[f"ensemble's {coverage:.0%} set"] = " | ".join(all_sets.sets[j])
            rows.append(row)
            csv_rows.append(csv_row)
        table = pd.DataFrame(rows)
        # the photo's thumbnail stays in view while the models' columns scroll (six models: nine columns); its name
        # and the ensemble's answer are not pinned: a pinned column's text is drawn grey, the faintest on a projector,
        # and a style's colour does not change it (#41 walk)
        st.dataframe(table, hide_index=True, width="stretch", row_height=72,
                     column_config={"picture": st.column_config.ImageColumn("picture", width="small", pinned=True)})
        st.caption(("Scroll the table sideways for every model. " if len(predictions) > 4 else "")
                   + "Calibrated confidences; \"?\": not sure (below the confidence above which the model's answers on "
                   f"calibration pictures were {DEFAULT_TARGET_ACCURACY:.0%} right, or every answer when none reached it)."
                   + (f" {all_sets.note}" if all_sets.note else "")
                   + (" The CSV adds the ensemble's prediction set of each photo." if all_sets.sets is not None
                      else ""))
        st.download_button("⬇️ Download as CSV", pd.DataFrame(csv_rows).to_csv(index=False), "predictions.csv",
                           "text/csv")
        # numbered as the table's rows: phones name every photo image.jpg, and a picker of equal labels picks the last
        shown = st.selectbox("The cards of", range(len(images)), index=newest,
                             format_func=lambda j: numbered(j, names),
                             help="Every model's card, More details and What if… for one of the photos above; a new "
                                  "photo shows its own.")  # no key: a new photo is a new list, so it starts on the newest
        image, predictions, mean = images[shown], [p.of(shown) for p in predictions], mean[shown:shown + 1]
        sure, sure_ensemble = {name: verdict.of(shown) for name, verdict in sure.items()}, sure_ensemble.of(shown)
        left, right = st.columns([1, 3])
        left.image(image, caption=picture_name(names[shown]), width="stretch")
    else:
        image = images[0]

    winners = [classes[int(p.probs[0].argmax())] for p in predictions if p.model in members]  # the members'
    label, share = agreement(winners, prefer=classes[int(mean[0].argmax())])
    with right:
        a, b, c = st.columns(3)
        a.metric("Ensemble", spoken(classes[int(mean[0].argmax())]),
                 f"{mean[0].max():.0%} sure" + (" · 🤔" if sure_ensemble.not_sure[0] else ""),
                 delta_color="off", delta_arrow="off", help=f"The calibrated probabilities of {', '.join(members)} averaged, then sharpened or softened by "
                      "the ensemble's own temperature (fitted on val): its confidence is honest as an ensemble's, so "
                      "it can be higher than the mean of the members'.")
        b.metric("Agreement", f"{share:.0%}",
                 f"{sum(w == label for w in winners)} of {len(winners)} say {spoken(label)}",
                 delta_color="off", delta_arrow="off", help="Among the ensemble's members: the models outside it are not counted.")
        c.metric("Model time", f"{max(p.seconds for p in predictions) * 1000:.0f} ms",
                 help="Until the last model answered: the models are asked side by side, each timed from the "
                      "question to its answer, when this image was first predicted (then cached)"
                      + (f"; the {len(images)} photos were asked in one go." if len(images) > 1 else "."))
    st.caption(" · ".join(filter(None, [f"Ensemble of {len(members)}: {', '.join(members)}"
                                        + ("" if picked else " (no member chosen: every model)"),
                                        sure_ensemble.doubt() if sure_ensemble.not_sure[0] else "",
                                        sure_ensemble.note])))
    # the ensemble's prediction set on a line of its own, filled in after the cards: one line before and after for
    # most sets (a set of many actions at 99% may take two), so the cards stay where they were drawn (in the line
    # above, the set made it wrap and pushed them down)
    ensemble_set = st.empty()  # not calibrated: the line above says why, and there is no set
    if sure_ensemble.calibrated:
        ensemble_set.caption(f"{coverage:.0%} set (what it cannot rule out): …")
    rows = model_rows(len(predictions))
    opened = []  # (the slot under its row, its prediction) of each card whose More details is open
    for i, prediction in enumerate(predictions):  # every prediction is drawn before any similar image
        probs = prediction.probs[0]
        columns, under = rows[i // len(rows[0][0])]
        # as tall as the row's tallest card: the row stays one band, its open card's details a line or two longer
        with columns[i % len(columns)].container(border=True, key=f"card_{prediction.model}", height="stretch"):
            verdict = sure[prediction.model]
            # one confidence per card, in words; the set, the neighbours' vote and the time one click away
            st.html(answer_card(prediction.model, probs, classes, verdict.not_sure[0]))
            # its details and similar images are built when it is opened: a room of thirty neither computes nor draws
            # them for each visitor when few open them (#41)
            more = st.expander("More details", key=f"details_{prediction.model}", on_change="rerun")
            if more.open:
                opened.append((under, prediction))
                verdict = with_sets(verdict, [selection.run(prediction.model)], prediction.probs, classes, coverage)
                with more:
                    if verdict.not_sure[0]:
                        st.caption(f"🤔 {verdict.doubt()}")
                    if verdict.sets is not None:
                        st.markdown(verdict.words(0, coverage))
                    if verdict.note:
                        st.caption(verdict.note)
                    st.caption(f"⏱ {prediction.seconds * 1000:.0f} ms to its answer"
                               + (f" for all {len(images)} photos" if len(images) > 1 else "")  # asked in one go
                               + f", beside the other models{engine(prediction)}")
    if sure_ensemble.calibrated:
        with_set = with_sets(sure_ensemble, member_runs, mean, classes, coverage)
        ensemble_set.caption(with_set.words(0, coverage) or with_set.no_sets)
    if similar:  # under the card's row, the page's width: in the card they made it a screen long beside its neighbours
        for under, prediction in opened:
            with under.container(border=True, key=f"similar_{prediction.model}"), \
                    friendly(f"Similar images for {prediction.model}"):
                st.markdown(f"**{prediction.model}**'s More details, continued")
                similar_images(selection, selection.run(prediction.model), prediction.embeddings,
                               prediction.probs[0], k, columns=6)

    what_if(image, loaded, predictions, members, member_runs, classes, tta)


answers(selection, chosen_runs, members, tta, similar, k, coverage)
