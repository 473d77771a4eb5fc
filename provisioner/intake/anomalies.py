"""The anomaly codes of the intake gate, with one sentence per code in nl, fr, de and en.

The numbers are the social security's own anomaly numbers for file-level refusals, so that a
sender's software that already knows them can act on this gateway's notices too. Where the
field gives several numbers for one family ("sequence malformed or zero: 112/113/127") this
gateway fixes which is which, as documented in each entry. The sentences are what a sender
reads in the notice; they never quote the refused file's content.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, slots=True)
class Anomaly:
    code: int
    key: str
    sentences: dict[str, str]

    def sentence(self, lang: str) -> str:
        return self.sentences.get(lang) or self.sentences["en"]


def _a(code: int, key: str, en: str, nl: str, fr: str, de: str) -> Anomaly:
    return Anomaly(code, key, {"en": en, "nl": nl, "fr": fr, "de": de})


ANOMALIES: Final[dict[int, Anomaly]] = {
    a.code: a
    for a in (
        _a(
            107,
            "go-name",
            "The GO (or TD) file name is not TYPE.PURPOSE.SENDER.YYYYMMDD.SEQ.ENV.PARTS, or the "
            "set has both a GO and a TD file.",
            "De naam van het GO-bestand (of TD-bestand) is niet "
            "TYPE.DOEL.AFZENDER.JJJJMMDD.VOLGNR.OMG.DELEN, of de reeks heeft zowel een GO- als "
            "een TD-bestand.",
            "Le nom du fichier GO (ou TD) n'est pas TYPE.OBJET.EXPEDITEUR.AAAAMMJJ.SEQ.ENV.PARTIES, "
            "ou le lot contient à la fois un fichier GO et un fichier TD.",
            "Der Name der GO-Datei (oder TD-Datei) entspricht nicht "
            "TYP.ZWECK.ABSENDER.JJJJMMTT.LFDNR.UMG.TEILE, oder der Satz enthält sowohl eine GO- "
            "als auch eine TD-Datei.",
        ),
        _a(
            108,
            "sender-not-uploader",
            "The sender number in the file name is not the sender number of the account that "
            "uploaded it.",
            "Het afzendernummer in de bestandsnaam is niet dat van de account die het bestand "
            "opgeladen heeft.",
            "Le numéro d'expéditeur dans le nom du fichier n'est pas celui du compte qui l'a "
            "déposé.",
            "Die Absendernummer im Dateinamen ist nicht die des Kontos, das die Datei hochgeladen "
            "hat.",
        ),
        _a(
            109,
            "date-format",
            "The date in the file name is not 8 digits (YYYYMMDD).",
            "De datum in de bestandsnaam bestaat niet uit 8 cijfers (JJJJMMDD).",
            "La date dans le nom du fichier ne compte pas 8 chiffres (AAAAMMJJ).",
            "Das Datum im Dateinamen besteht nicht aus 8 Ziffern (JJJJMMTT).",
        ),
        _a(
            110,
            "date-invalid",
            "The date in the file name is not a calendar date.",
            "De datum in de bestandsnaam bestaat niet.",
            "La date dans le nom du fichier n'existe pas.",
            "Das Datum im Dateinamen ist kein gültiges Kalenderdatum.",
        ),
        _a(
            111,
            "date-future",
            "The date in the file name lies in the future.",
            "De datum in de bestandsnaam ligt in de toekomst.",
            "La date dans le nom du fichier est dans le futur.",
            "Das Datum im Dateinamen liegt in der Zukunft.",
        ),
        _a(
            112,
            "sequence-length",
            "The sequence number in the file name is not 5 characters long.",
            "Het volgnummer in de bestandsnaam telt geen 5 tekens.",
            "Le numéro de séquence dans le nom du fichier ne compte pas 5 caractères.",
            "Die laufende Nummer im Dateinamen hat nicht 5 Zeichen.",
        ),
        _a(
            113,
            "sequence-zero",
            "The sequence number in the file name is 00000, which is never valid.",
            "Het volgnummer in de bestandsnaam is 00000, wat nooit geldig is.",
            "Le numéro de séquence dans le nom du fichier est 00000, ce qui n'est jamais valable.",
            "Die laufende Nummer im Dateinamen ist 00000, was nie gültig ist.",
        ),
        _a(
            114,
            "parts-format",
            "The number of parts in the file name is not a number of 1 to 4 digits.",
            "Het aantal delen in de bestandsnaam is geen getal van 1 tot 4 cijfers.",
            "Le nombre de parties dans le nom du fichier n'est pas un nombre de 1 à 4 chiffres.",
            "Die Anzahl der Teile im Dateinamen ist keine Zahl mit 1 bis 4 Ziffern.",
        ),
        _a(
            115,
            "part-format",
            "The part number in the file name is not a number of 1 to 4 digits.",
            "Het deelnummer in de bestandsnaam is geen getal van 1 tot 4 cijfers.",
            "Le numéro de partie dans le nom du fichier n'est pas un nombre de 1 à 4 chiffres.",
            "Die Teilnummer im Dateinamen ist keine Zahl mit 1 bis 4 Ziffern.",
        ),
        _a(
            116,
            "parts-zero",
            "The number of parts or the part number in the file name is zero.",
            "Het aantal delen of het deelnummer in de bestandsnaam is nul.",
            "Le nombre de parties ou le numéro de partie dans le nom du fichier vaut zéro.",
            "Die Anzahl der Teile oder die Teilnummer im Dateinamen ist null.",
        ),
        _a(
            117,
            "environment",
            "The environment in the file name is not R, T or S.",
            "De omgeving in de bestandsnaam is niet R, T of S.",
            "L'environnement dans le nom du fichier n'est pas R, T ou S.",
            "Die Umgebung im Dateinamen ist nicht R, T oder S.",
        ),
        _a(
            118,
            "production-outside-in",
            "A production file (R) was uploaded outside the IN directory.",
            "Een productiebestand (R) werd buiten de map IN opgeladen.",
            "Un fichier de production (R) a été déposé en dehors du répertoire IN.",
            "Eine Produktionsdatei (R) wurde außerhalb des Verzeichnisses IN hochgeladen.",
        ),
        _a(
            119,
            "test-outside-intest",
            "A test file (T) was uploaded outside the INTEST directory.",
            "Een testbestand (T) werd buiten de map INTEST opgeladen.",
            "Un fichier de test (T) a été déposé en dehors du répertoire INTEST.",
            "Eine Testdatei (T) wurde außerhalb des Verzeichnisses INTEST hochgeladen.",
        ),
        _a(
            120,
            "declaration-count",
            "The set does not hold as many declaration files (FI) as its GO file announces.",
            "De reeks bevat niet zoveel aangiftebestanden (FI) als het GO-bestand aankondigt.",
            "Le lot ne contient pas autant de fichiers de déclaration (FI) que son fichier GO "
            "l'annonce.",
            "Der Satz enthält nicht so viele Meldungsdateien (FI), wie seine GO-Datei ankündigt.",
        ),
        _a(
            121,
            "signature-unexpected",
            "A signature file (FS) was sent where none is expected (simulation files, S, are "
            "not signed).",
            "Er werd een handtekeningbestand (FS) verstuurd waar er geen verwacht wordt "
            "(simulatiebestanden, S, worden niet ondertekend).",
            "Un fichier de signature (FS) a été envoyé là où aucun n'est attendu (les fichiers "
            "de simulation, S, ne sont pas signés).",
            "Eine Signaturdatei (FS) wurde gesendet, wo keine erwartet wird "
            "(Simulationsdateien, S, werden nicht signiert).",
        ),
        _a(
            122,
            "declaration-numbering",
            "The declaration files (FI) of the set are not numbered 1 to N of the N parts "
            "announced by its GO file.",
            "De aangiftebestanden (FI) van de reeks zijn niet genummerd van 1 tot N van de N "
            "delen die het GO-bestand aankondigt.",
            "Les fichiers de déclaration (FI) du lot ne sont pas numérotés de 1 à N des N "
            "parties annoncées par son fichier GO.",
            "Die Meldungsdateien (FI) des Satzes sind nicht von 1 bis N der N Teile nummeriert, "
            "die seine GO-Datei ankündigt.",
        ),
        _a(
            123,
            "signature-missing",
            "A declaration file (FI) has no signature file (FS) with the same numbering.",
            "Een aangiftebestand (FI) heeft geen handtekeningbestand (FS) met dezelfde nummering.",
            "Un fichier de déclaration (FI) n'a pas de fichier de signature (FS) de même "
            "numérotation.",
            "Eine Meldungsdatei (FI) hat keine Signaturdatei (FS) mit derselben Nummerierung.",
        ),
        _a(
            124,
            "signature-orphan",
            "A signature file (FS) has no declaration file (FI) with the same numbering.",
            "Een handtekeningbestand (FS) heeft geen aangiftebestand (FI) met dezelfde nummering.",
            "Un fichier de signature (FS) n'a pas de fichier de déclaration (FI) de même "
            "numérotation.",
            "Eine Signaturdatei (FS) hat keine Meldungsdatei (FI) mit derselben Nummerierung.",
        ),
        _a(
            125,
            "signature-invalid",
            "The signature (FS) does not verify: the file was changed after signing, or it was "
            "not signed with a certificate registered for this channel and valid at upload "
            "time.",
            "De handtekening (FS) klopt niet: het bestand werd na ondertekening gewijzigd, of "
            "het werd niet ondertekend met een certificaat dat voor dit kanaal geregistreerd is "
            "en geldig was op het moment van opladen.",
            "La signature (FS) n'est pas valable : le fichier a été modifié après la signature, "
            "ou il n'a pas été signé avec un certificat enregistré pour ce canal et valable au "
            "moment du dépôt.",
            "Die Signatur (FS) ist ungültig: Die Datei wurde nach dem Signieren geändert, oder "
            "sie wurde nicht mit einem für diesen Kanal registrierten, zum Zeitpunkt des "
            "Hochladens gültigen Zertifikat signiert.",
        ),
        _a(
            126,
            "date-too-old",
            "The date in the file name is too far in the past.",
            "De datum in de bestandsnaam ligt te ver in het verleden.",
            "La date dans le nom du fichier est trop ancienne.",
            "Das Datum im Dateinamen liegt zu weit in der Vergangenheit.",
        ),
        _a(
            127,
            "sequence-characters",
            "The sequence number in the file name holds characters other than digits (letters "
            "are only used in files sent back).",
            "Het volgnummer in de bestandsnaam bevat andere tekens dan cijfers (letters komen "
            "enkel voor in teruggestuurde bestanden).",
            "Le numéro de séquence dans le nom du fichier contient d'autres caractères que des "
            "chiffres (les lettres ne figurent que dans les fichiers renvoyés).",
            "Die laufende Nummer im Dateinamen enthält andere Zeichen als Ziffern (Buchstaben "
            "kommen nur in zurückgesandten Dateien vor).",
        ),
        _a(
            128,
            "part-above-parts",
            "The part number is greater than the number of parts.",
            "Het deelnummer is groter dan het aantal delen.",
            "Le numéro de partie est supérieur au nombre de parties.",
            "Die Teilnummer ist größer als die Anzahl der Teile.",
        ),
        _a(
            129,
            "prefix",
            "The file name does not start with FI, FS, GO or TD.",
            "De bestandsnaam begint niet met FI, FS, GO of TD.",
            "Le nom du fichier ne commence pas par FI, FS, GO ou TD.",
            "Der Dateiname beginnt nicht mit FI, FS, GO oder TD.",
        ),
        _a(
            130,
            "no-go",
            "No GO file arrived for this set within the waiting time; the set was not processed.",
            "Voor deze reeks kwam binnen de wachttijd geen GO-bestand aan; de reeks werd niet "
            "verwerkt.",
            "Aucun fichier GO n'est arrivé pour ce lot dans le délai d'attente ; le lot n'a pas "
            "été traité.",
            "Für diesen Satz kam innerhalb der Wartezeit keine GO-Datei an; der Satz wurde nicht "
            "verarbeitet.",
        ),
        _a(
            131,
            "declaration-name",
            "The declaration file (FI) name is not TYPE.PURPOSE.SENDER.YYYYMMDD.SEQ.ENV.PARTS.PART "
            "with a 4-character purpose and a 6-digit sender number.",
            "De naam van het aangiftebestand (FI) is niet "
            "TYPE.DOEL.AFZENDER.JJJJMMDD.VOLGNR.OMG.DELEN.DEEL met een doel van 4 tekens en een "
            "afzendernummer van 6 cijfers.",
            "Le nom du fichier de déclaration (FI) n'est pas "
            "TYPE.OBJET.EXPEDITEUR.AAAAMMJJ.SEQ.ENV.PARTIES.PARTIE avec un objet de 4 caractères "
            "et un numéro d'expéditeur de 6 chiffres.",
            "Der Name der Meldungsdatei (FI) entspricht nicht "
            "TYP.ZWECK.ABSENDER.JJJJMMTT.LFDNR.UMG.TEILE.TEIL mit einem Zweck aus 4 Zeichen und "
            "einer sechsstelligen Absendernummer.",
        ),
        _a(
            132,
            "signature-name",
            "The signature file (FS) name is not TYPE.PURPOSE.SENDER.YYYYMMDD.SEQ.ENV.PARTS.PART "
            "with a 4-character purpose and a 6-digit sender number.",
            "De naam van het handtekeningbestand (FS) is niet "
            "TYPE.DOEL.AFZENDER.JJJJMMDD.VOLGNR.OMG.DELEN.DEEL met een doel van 4 tekens en een "
            "afzendernummer van 6 cijfers.",
            "Le nom du fichier de signature (FS) n'est pas "
            "TYPE.OBJET.EXPEDITEUR.AAAAMMJJ.SEQ.ENV.PARTIES.PARTIE avec un objet de 4 caractères "
            "et un numéro d'expéditeur de 6 chiffres.",
            "Der Name der Signaturdatei (FS) entspricht nicht "
            "TYP.ZWECK.ABSENDER.JJJJMMTT.LFDNR.UMG.TEILE.TEIL mit einem Zweck aus 4 Zeichen und "
            "einer sechsstelligen Absendernummer.",
        ),
        _a(
            133,
            "already-sent",
            "A file with this name was already accepted; every set needs a new sequence number.",
            "Een bestand met deze naam werd al aanvaard; elke reeks heeft een nieuw volgnummer "
            "nodig.",
            "Un fichier portant ce nom a déjà été accepté ; chaque lot a besoin d'un nouveau "
            "numéro de séquence.",
            "Eine Datei mit diesem Namen wurde bereits angenommen; jeder Satz braucht eine neue "
            "laufende Nummer.",
        ),
        _a(
            154,
            "purpose-not-allowed",
            "This channel is not registered for the application of this purpose code.",
            "Dit kanaal is niet geregistreerd voor de toepassing van deze doelcode.",
            "Ce canal n'est pas enregistré pour l'application de ce code d'objet.",
            "Dieser Kanal ist für die Anwendung dieses Zweckcodes nicht registriert.",
        ),
        _a(
            184,
            "too-large",
            "The file is larger than this gateway accepts.",
            "Het bestand is groter dan deze gateway aanvaardt.",
            "Le fichier est plus volumineux que ce que cette passerelle accepte.",
            "Die Datei ist größer, als dieses Gateway annimmt.",
        ),
        _a(
            257,
            "simulation-outside-intest-s",
            "A simulation file (S) was uploaded outside the INTEST-S directory.",
            "Een simulatiebestand (S) werd buiten de map INTEST-S opgeladen.",
            "Un fichier de simulation (S) a été déposé en dehors du répertoire INTEST-S.",
            "Eine Simulationsdatei (S) wurde außerhalb des Verzeichnisses INTEST-S hochgeladen.",
        ),
    )
}


@dataclass(frozen=True, slots=True, order=True)
class Finding:
    """One anomaly of one file of a set (``name`` as uploaded; ``detail`` is ours, in English,
    for the log and the record: it never quotes file content)."""

    name: str
    code: int
    detail: str = ""
