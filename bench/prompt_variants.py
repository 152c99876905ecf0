"""Screening of prompt-classifier variants on the paper's 985 Quora questions (issue 8).

Raw decision scores thresholded at 0 (no calibration), stratified 10-fold CV, CV seeds 0, 1, 2; every
hyper-parameter fixed up front (all variants tried are printed). MiniLM embeddings cached in /tmp/pexp.
Run: ``.venv/bin/python -W ignore -m bench.prompt_variants base combo knn aux ft`` (results in docs/benchmarks.md).
"""
import os
import sys


def _cache():
    import numpy as np, json
    os.makedirs('/tmp/pexp', exist_ok=True)
    from classifiers.data import load_paper, load_silver, load_coconot
    from classifiers.prompt import embed
    q=[r for r in load_paper() if r["source"]=="quora"]
    c1=load_coconot(); c0=load_coconot(contrast=True)
    s=[r for r in load_silver() if r["intervention"]=="baseline" and r["split"] in ("jailbreakbench","harmless")]
    sp=list(dict.fromkeys(r["prompt"] for r in s))
    lab={}
    for r in s: lab.setdefault(r["prompt"], 1 if r["split"]=="jailbreakbench" else 0)
    cc=[(r["prompt"],r["should_refuse"]) for r in c1+c0]
    print(len(q),len(cc),len(sp), sum(lab.values()))
    Xq=[r["prompt"] for r in q]; yq=np.array([int(r["refusal"]) for r in q])
    np.savez("/tmp/pexp/emb.npz", q=embed(Xq), c=embed([p for p,_ in cc]), s=embed(sp), yq=yq, yc=np.array([l for _,l in cc]), ys=np.array([lab[p] for p in sp]))
    json.dump({"q":Xq,"c":[p for p,_ in cc],"s":sp}, open("/tmp/pexp/texts.json","w"))


def main():
    if not os.path.exists("/tmp/pexp/emb.npz"):
        _cache()
    import numpy as np, json, warnings
    warnings.filterwarnings("ignore")
    from scipy import sparse
    from sklearn.model_selection import StratifiedKFold
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import SVC
    from sklearn.feature_extraction.text import TfidfVectorizer
    d=np.load("/tmp/pexp/emb.npz"); T=json.load(open("/tmp/pexp/texts.json"))
    Eq,Ec,Es=d["q"],d["c"],d["s"]; yq,yc,ys=d["yq"],d["yc"],d["ys"]
    Xq=np.array(T["q"],dtype=object); Xc=T["c"]; Xs=T["s"]
    std=lambda z,ref: z/ (np.std(ref) or 1)
    def svm(Etr,ytr,Ete,w=None,C=3.0):
        m=SVC(C=C,kernel="rbf",gamma="scale").fit(Etr,ytr,sample_weight=w); return m.decision_function(Ete), m.decision_function(Etr)
    def lr(Etr,ytr,Ete,w=None,C=1.0):
        m=LogisticRegression(C=C,max_iter=3000,solver="liblinear").fit(Etr,ytr,sample_weight=w); return m.decision_function(Ete), m.decision_function(Etr)
    def tfidf_feats(tr_txt,te_txt,char=True):
        vw=TfidfVectorizer(ngram_range=(1,2),sublinear_tf=True,min_df=1)
        A=[vw.fit_transform(tr_txt)];B=[vw.transform(te_txt)]
        if char:
            vc=TfidfVectorizer(analyzer="char_wb",ngram_range=(2,5),sublinear_tf=True,min_df=2)
            A.append(vc.fit_transform(tr_txt));B.append(vc.transform(te_txt))
        return sparse.hstack(A).tocsr(), sparse.hstack(B).tocsr()
    def knn(Etr,ytr,Ete,k=15):
        S=Ete@Etr.T; idx=np.argsort(-S,1)[:,:k]
        w=np.take_along_axis(S,idx,1); w=np.exp(w*10)
        p=(w*ytr[idx]).sum(1)/w.sum(1); p=np.clip(p,0.02,0.98); return np.log(p/(1-p))
    def aux(which):
        E=[];Y=[];X=[]
        if "c" in which: E.append(Ec);Y.append(yc);X+=Xc
        if "s" in which: E.append(Es);Y.append(ys);X+=Xs
        return np.vstack(E),np.concatenate(Y),X
    res={}
    def run(name,f,seeds=(0,1,2)):
        accs=[]
        for sd in seeds:
            z=np.zeros(len(yq))
            for tr,te in StratifiedKFold(10,shuffle=True,random_state=sd).split(Eq,yq):
                z[te]=f(tr,te)
            accs.append(float(np.mean((z>0)==yq)))
        res[name]=accs; print(f"{name:40s} "+" ".join(f"{a:.4f}" for a in accs)+f"  mean {np.mean(accs):.4f}",flush=True)
    def v_svm(tr,te,C=3.0): return svm(Eq[tr],yq[tr],Eq[te],C=C)[0]
    def v_lr(tr,te): return lr(Eq[tr],yq[tr],Eq[te])[0]
    def v_blend(tr,te):
        a,at=lr(Eq[tr],yq[tr],Eq[te]); b,bt=svm(Eq[tr],yq[tr],Eq[te]); return a/np.std(at)+b/np.std(bt)
    def v_combo(tr,te,C=3.0,we=1.0,char=True):
        A,B=tfidf_feats(list(Xq[tr]),list(Xq[te]),char)
        A=sparse.hstack([A,sparse.csr_matrix(Eq[tr]*we)]).tocsr();B=sparse.hstack([B,sparse.csr_matrix(Eq[te]*we)]).tocsr()
        return lr(A,yq[tr],B,C=C)[0]
    def v_aux_svm(tr,te,which,wa):
        Ea,ya,_=aux(which); E=np.vstack([Eq[tr],Ea]); y=np.concatenate([yq[tr],ya]); w=np.concatenate([np.ones(len(tr)),np.full(len(ya),wa)])
        return svm(E,y,Eq[te],w=w)[0]
    def v_blend_knn(tr,te):
        a,at=lr(Eq[tr],yq[tr],Eq[te]); b,bt=svm(Eq[tr],yq[tr],Eq[te]); k=knn(Eq[tr],yq[tr],Eq[te])
        return a/np.std(at)+b/np.std(bt)+0.5*k/np.std(k)
    def v_blend_combo(tr,te):
        b,bt=svm(Eq[tr],yq[tr],Eq[te]); a=v_combo(tr,te)
        return b/np.std(bt)+a/np.std(a)
    which=sys.argv[1:] or ["base"]
    SEEDS=(0,1,2)
    if "base" in which:
        run("minilm_lr C=1",v_lr); run("minilm_svm C=3",v_svm); run("blend lr+svm",v_blend); run("knn k=15",lambda tr,te:knn(Eq[tr],yq[tr],Eq[te]))
    if "combo" in which:
        run("LR[emb+tfidf word1-2+char2-5] C=3",v_combo)
        run("LR[emb*2+tfidf word+char] C=3",lambda tr,te:v_combo(tr,te,we=2.0))
        run("LR[emb*2+tfidf word+char] C=10",lambda tr,te:v_combo(tr,te,C=10,we=2.0))
        run("LR[emb+tfidf word] C=3",lambda tr,te:v_combo(tr,te,char=False))
        run("blend svm + combo",v_blend_combo)
    if "aux" in which:
        for wh in ("c","s","cs"):
            for wa in (0.1,0.3,1.0):
                run(f"svm + aux {wh} w={wa}",lambda tr,te:v_aux_svm(tr,te,wh,wa))
    if "knn" in which:
        run("blend + 0.5 knn",v_blend_knn)
        for C in (1.0,10.0): run(f"minilm_svm C={C}",lambda tr,te:v_svm(tr,te,C))
    if "ft" in which:
        # MiniLM fine-tuned on the training folds (classifiers.finetune: all 6 layers, 64 tokens, 4 epochs,
        # seed = CV seed), alone and blended with the SVM (each score divided by its out-of-fold std);
        # out-of-fold scores cached per seed in /tmp/pexp/ft_s{seed}.npz (~15 min per seed here)
        from classifiers.finetune import FineTunedMiniLM
        accs={"ft":[],"ft+svm":[]}
        for sd in SEEDS:
            path=f"/tmp/pexp/ft_s{sd}.npz"
            if os.path.exists(path):
                c=np.load(path); ft,sv=c["ft"],c["sv"]
            else:
                ft=np.zeros(len(yq)); sv=np.zeros(len(yq))
                for tr,te in StratifiedKFold(10,shuffle=True,random_state=sd).split(Eq,yq):
                    m=FineTunedMiniLM(max_length=64,epochs=4,random_state=sd).fit(list(Xq[tr]),yq[tr])
                    ft[te]=m.decision_function(list(Xq[te])); sv[te]=v_svm(tr,te)
                np.savez(path,ft=ft,sv=sv)
            accs["ft"].append(float(np.mean((ft>0)==yq))); accs["ft+svm"].append(float(np.mean((ft/ft.std()+sv/sv.std()>0)==yq)))
        for name,a in accs.items():
            res[name]=a; print(f"{name:40s} "+" ".join(f"{x:.4f}" for x in a)+f"  mean {np.mean(a):.4f}",flush=True)
    if "ftship" in which:
        # the shipped candidate classifiers.prompt "minilm_ft_svm" (scales from the training fit), CV seed 0
        from classifiers.prompt import _make_base
        run("minilm_ft_svm (shipped blend)",lambda tr,te:_make_base("minilm_ft_svm",0).fit(list(Xq[tr]),yq[tr],Eq[tr]).logit(list(Xq[te]),Eq[te]),seeds=(0,))
    json.dump(res,open(f"/tmp/pexp/res_{'_'.join(which)}.json","w"))


if __name__ == "__main__":
    main()
